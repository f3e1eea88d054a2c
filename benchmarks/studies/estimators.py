"""The inner-loop estimators and ProMP's outer loop on cheetah-dir at the full protocol: short runs, side by side.

Each variant trains configs/cheetah-dir.yaml (40 tasks x 20 episodes x 200 steps, TRPO at max KL 0.01, frame skip
1) with one change, on the same seed, for `--iterations` meta-iterations, evaluated on the 40 held-out tasks every
25; the reference is the published grid run of the same algorithm and seed (estimator reinforce, TRPO: its first
iterations are the same protocol). Variants:
  lvc         estimator lvc (ProMP's low-variance curvature) under TRPO;
  dice        estimator dice (DiCE's magic box with the advantage as baseline) under TRPO;
  promp-lvc   ProMP's outer loop (clipped surrogate, inner-KL penalty, 5 Adam steps at 1e-3) with lvc: ProMP itself.
Runs are real run directories under --runs (resumable: run the command again to continue or extend them; finished
ones are skipped). Writes benchmarks/results/studies/estimators.{json,md,png}: held-out return after one step at
each evaluation, and seconds per iteration.

    python benchmarks/studies/estimators.py                    # ANIL and MAML, seed 0, 50 iterations (about 1 h)
    python benchmarks/studies/estimators.py --iterations 2 --eval-every 1 --tasks 2 --episodes 2 --runs /tmp/r \\
        --out /tmp/est                                         # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from metarl.common.files import write_report
from metarl.config import load_config
from metarl.experiments.figures import save_figure
from metarl.experiments.sweep import paper_run_name
from metarl.runs import CHECKPOINT_FILE, create_run, is_complete, prepare_resume, preset_path, read_metrics, train

REPO = Path(__file__).resolve().parents[2]
GRID = REPO / "benchmarks" / "results" / "grid" / "runs"
VARIANTS = {"lvc": {"estimator": "lvc"}, "dice": {"estimator": "dice"},
            "promp-lvc": {"estimator": "lvc", "outer": "promp"}}


def run_variant(run_dir: Path, overrides: dict) -> None:
    """Train (or continue) one run to at least the study's length; a finished run is left as it is (also one
    extended beyond it)."""
    if (run_dir / CHECKPOINT_FILE).exists():
        path, cfg, ckpt = prepare_resume(run_dir)
        if is_complete(cfg, ckpt) and cfg.iterations >= overrides["iterations"]:
            return
        path, cfg, ckpt = prepare_resume(run_dir, max(cfg.iterations, overrides["iterations"]))
        train(path, cfg, ckpt)
        return
    cfg = load_config(preset_path("cheetah-dir-paper"), overrides)  # the variants depart from the papers' loop
    train(create_run(cfg, run_dir), cfg)


def summary(metrics: list[dict]) -> dict:
    """Every held-out evaluation of a run (return after one step) and its median seconds per iteration."""
    evals = {m["iteration"]: m["eval/return_step_1"] for m in metrics if "eval/return_step_1" in m}
    times = [m["time/iteration_s"] for m in metrics if "time/iteration_s" in m]
    return {"eval_return_step_1": evals, "iteration_s": statistics.median(times) if times else None}


def figure(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = list(result["algos"])
    fig, axes = plt.subplots(1, len(algos), figsize=(5 * len(algos), 3.6), squeeze=False)
    for ax, algo in zip(axes[0], algos):
        for name, row in result["algos"][algo].items():
            points = sorted((int(k), v) for k, v in row["eval_return_step_1"].items())
            if points:  # one colour per variant in every panel
                colour = f"C{(['reinforce (published)', *VARIANTS].index(name))}"
                ax.plot(*zip(*points), marker="o", label=name, color=colour)
        ax.set_title(f"cheetah-dir {algo.upper()}, seed {result['seed']}")
        ax.set_xlabel("meta-iteration")
        ax.set_ylabel("held-out return after 1 step")
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def markdown(result: dict) -> str:
    lines = ["| algorithm | variant | " + " | ".join(f"return after 1 step, iteration {i}" for i in result["evals"])
             + " | last evaluation (iteration) | peak (iteration) | last / peak | s / iteration |",
             "| --- | --- | " + "--- | " * len(result["evals"]) + "--- | --- | --- | --- |"]
    for algo, rows in result["algos"].items():
        for name, row in rows.items():
            evals = row["eval_return_step_1"]
            cells = [f"{evals[i]:.1f}" if i in evals else "-" for i in result["evals"]]
            last = max(evals) if evals else None
            peak = max(evals, key=evals.get) if evals else None
            ends = (f"{evals[last]:.1f} ({last}) | {evals[peak]:.1f} ({peak}) | "
                    f"{evals[last] / evals[peak]:.2f}" if evals and evals[peak] > 0 else "- | - | -")
            speed = f"{row['iteration_s']:.1f}" if row["iteration_s"] else "-"
            lines.append(f"| {algo.upper()} | {name} | " + " | ".join(cells) + f" | {ends} | {speed} |")
    lines += ["", f"configs/cheetah-dir.yaml, seed {result['seed']}, {result['iterations']} meta-iterations per "
              "variant (a run extended with `metarl train --resume RUN --iterations N` shows its later evaluations "
              "in the last columns); reinforce: the published grid run (benchmarks/results/grid/runs/, 500 "
              f"iterations). Command: `{result['command']}`, {result['date']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["anil", "maml"], choices=["anil", "maml"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--tasks", type=int, help="meta_batch_size and eval_tasks (smoke tests only)")
    parser.add_argument("--episodes", type=int, help="episodes_per_task and eval_episodes_per_task (smoke tests)")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "studies" / "estimators")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "estimators")
    parser.add_argument("--no-train", action="store_true", help="only report the runs that exist (train nothing)")
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.eval_every < 1:
        parser.error(f"--iterations and --eval-every must be >= 1, got {args.iterations} and {args.eval_every}")
    small = {**({"meta_batch_size": args.tasks, "eval_tasks": args.tasks} if args.tasks else {}),
             **({"episodes_per_task": args.episodes, "eval_episodes_per_task": args.episodes}
                if args.episodes else {})}
    result = {"command": " ".join(["python", "benchmarks/studies/estimators.py", *(sys.argv[1:] if argv is None
                                                                                 else argv)]),
              "seed": args.seed, "iterations": args.iterations,
              "evals": list(range(args.eval_every, args.iterations + 1, args.eval_every)), "algos": {}}
    for algo in args.algos:
        rows = {}
        reference = GRID / paper_run_name("cheetah-dir", algo, args.seed)
        if not small and (reference / CHECKPOINT_FILE).exists():
            rows["reinforce (published)"] = summary(read_metrics(reference))
        for name in args.variants:
            run_dir = args.runs / f"cheetah-dir-{algo}-{name}-seed{args.seed}"
            if args.no_train:
                if (run_dir / CHECKPOINT_FILE).exists():
                    rows[name] = summary(read_metrics(run_dir))
                continue
            print(f"{algo} {name}: {run_dir}", flush=True)
            run_variant(run_dir, {"algo": algo, "seed": args.seed, "iterations": args.iterations,
                                  "eval_every": args.eval_every, **small, **VARIANTS[name]})
            rows[name] = summary(read_metrics(run_dir))
        result["algos"][algo] = rows
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = markdown(result)
    write_report(args.out, result, text)
    figure(result, args.out.with_suffix(".png"))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
