"""HalfCheetah-Direction with bfloat16 Fisher-vector products: does the full protocol stay within today's spread?

Issue 33 lets `fvp_precision: bfloat16` (the Fisher-vector products of the TRPO step in bfloat16; the loss, the
gradient and the line search stay float32) become the default only if a full-protocol cheetah-dir run with it (one
seed) stays within the spread over seeds of the float32 runs. This trains that seed (configs/cheetah-dir-paper.yaml,
one change: `fvp_precision=bfloat16`), evaluates it as `metarl eval` does (40 held-out tasks, 0..3 adaptation
steps), publishes it to --published (in git) and writes benchmarks/results/studies/fisher_precision.{json,md}: its
held-out returns beside the published float32 seeds' mean and std over seeds, and whether its return after one
step lies within the float32 mean +- std.

    python benchmarks/studies/fisher_precision.py               # about 40 min on 2 cores (ANIL)
    python benchmarks/studies/fisher_precision.py --no-train    # the table of the published run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from cheetah_dir_candidates import GRID, summary
from study_runs import EVAL_STEPS, publish, run_variant

from metarl.common.files import write_report
from metarl.experiments.sweep import paper_run_name
from metarl.runs import EVAL_FILE

REPO = Path(__file__).resolve().parents[2]
COMMAND = "metarl train --config cheetah-dir-paper --algo {algo} --seed {seed} --set fvp_precision=bfloat16"


def float32_seeds(algo: str) -> list[dict]:
    """The published grid's float32 runs of `algo` on cheetah-dir with TRPO (the papers' protocol, whose Fisher
    products the precision changes; the row under test's reference)."""
    return [summary(run) for run in sorted(GRID.glob(f"{paper_run_name('cheetah-dir', algo, 0)[:-1]}*"))
            if (run / EVAL_FILE).is_file()]


def compare(algo: str, seed: int, run: Path) -> dict:
    """The bfloat16 run's returns after 0..3 steps and the float32 seeds' mean and std over seeds, per step."""
    reference = float32_seeds(algo)
    if len(reference) < 2:
        raise SystemExit(f"need at least two published float32 seeds of cheetah-dir {algo} under {GRID}")
    mean = [statistics.mean(r["returns"][k] for r in reference) for k in range(EVAL_STEPS + 1)]
    std = [statistics.stdev(r["returns"][k] for r in reference) for k in range(EVAL_STEPS + 1)]
    row = summary(run)
    same_seed = GRID / paper_run_name("cheetah-dir", algo, seed)
    same = summary(same_seed) if (same_seed / EVAL_FILE).is_file() else None
    within = abs(row["returns"][1] - mean[1]) <= std[1]
    return {"algo": algo, "seed": seed, "returns": row["returns"], "peak": row["peak"],
            "end_over_peak": row["end_over_peak"], "float32_seeds": len(reference), "float32_mean": mean,
            "float32_std": std,
            "float32_same_seed": None if same is None else {"returns": same["returns"],
                                                             "end_over_peak": same["end_over_peak"]},
            "within_spread": within, "command": COMMAND.format(algo=algo, seed=seed)}


def _ratio(row: dict) -> str:
    return "-" if row["end_over_peak"] is None else f"{row['end_over_peak']:.2f}"


def markdown(result: dict) -> str:
    steps = " | ".join(f"after {k} step{'s' * (k != 1)}" for k in range(EVAL_STEPS + 1))
    lines = [f"| algorithm | Fisher-vector products | seeds | {steps} | end / peak |",
             "| --- | --- | --- | " + "--- | " * (EVAL_STEPS + 1) + "--- |"]
    for row in result["rows"]:
        lines.append(f"| {row['algo'].upper()} | float32 (published grid) | {row['float32_seeds']} | "
                     + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in zip(row["float32_mean"], row["float32_std"]))
                     + " | - |")
        same = row.get("float32_same_seed")
        if same is not None:
            lines.append(f"| {row['algo'].upper()} | float32 (published grid, same seed) | seed {row['seed']} | "
                         + " | ".join(f"{v:.1f}" for v in same["returns"]) + " | " + _ratio(same) + " |")
        lines.append(f"| {row['algo'].upper()} | bfloat16 (`{row['command']}`) | seed {row['seed']} | "
                     + " | ".join(f"{v:.1f}" for v in row["returns"]) + " | "
                     + _ratio(row) + " |")
    verdicts = "; ".join(f"{row['algo'].upper()}: " + ("within" if row["within_spread"] else "**outside**")
                         for row in result["rows"])
    lines += ["", "Held-out return on the evaluation's 40 tasks after k adaptation steps at the run's last "
              "iteration; float32: mean ± std over the published grid's seeds of configs/cheetah-dir-paper.yaml. "
              f"The bfloat16 run's return after one step against the float32 mean ± std: {verdicts}. "
              f"Command: `{result['command']}`, {result['date']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["anil"], choices=["anil", "maml"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "studies" / "fisher_precision")
    parser.add_argument("--published", type=Path,
                        default=REPO / "benchmarks" / "results" / "studies" / "fisher_precision_runs",
                        help="where finished runs are copied and read from (in git; a run there is not trained again)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "fisher_precision")
    parser.add_argument("--no-train", action="store_true", help="only report the published runs (train nothing)")
    args = parser.parse_args(argv)
    result = {"command": " ".join(["python", "benchmarks/studies/fisher_precision.py",
                                   *(sys.argv[1:] if argv is None else argv)]), "rows": []}
    for algo in args.algos:
        run_dir = args.runs / f"cheetah-dir-{algo}-bf16-fisher-seed{args.seed}"
        done = args.published / run_dir.name
        if not (done / EVAL_FILE).is_file() and not args.no_train:
            print(f"== {run_dir.name}", flush=True)
            run_variant(run_dir, "cheetah-dir-paper", {"algo": algo, "seed": args.seed, "fvp_precision": "bfloat16"})
            publish(run_dir, args.published)
        if (done / EVAL_FILE).is_file():
            result["rows"].append(compare(algo, args.seed, done))
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = markdown(result)
    write_report(args.out, result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
