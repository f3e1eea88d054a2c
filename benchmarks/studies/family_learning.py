"""The new families learn: ANIL on each at a reduced, stated scale, one seed, checked for adaptation and progress.

Issue 54 asks, for the families without a full-protocol grid yet (ant-goal, humanoid-dir, hopper-params,
walker-params; ant-vel and ant-dir too, before their full runs), a learning check: at the end of training the
post-adaptation return (after one inner step) lies above the pre-adaptation return and above where it started. Each
row trains the family's preset (configs/<family>.yaml: the MAML code's locomotion protocol) at the scale below,
with ANIL and seed 0, then evaluates the final policy as `metarl eval` does (returns after 0..3 adaptation steps on
held-out tasks of the evaluation's seed, at the same reduced scale):

  SCALE: 20 tasks x 10 episodes per meta-iteration (the protocol: 40 x 20), 100 iterations, held-out evaluation on
  20 tasks x 10 episodes every 25 iterations and at the end; horizon, step sizes and everything else as the preset.

The check reads the training metrics: "start" is the mean post-adaptation return of the first 5 iterations, "end"
the mean over the last 10 of pre- and post-adaptation returns. Runs are run directories under --runs (resumable:
the same command continues them), published to --published (in git) when finished, or as they stand with
--publish-unfinished. Writes benchmarks/results/studies/family_learning.{json,md}, included on the task families
page.

    python benchmarks/studies/family_learning.py                      # every family (about an hour on 2 cores)
    python benchmarks/studies/family_learning.py --families hopper-params
    python benchmarks/studies/family_learning.py --no-train           # the table of the published runs
"""

from __future__ import annotations

import argparse
import datetime
import math
import shutil
import statistics
import sys
from pathlib import Path

from study_runs import EVAL_STEPS, publish, run_variant

from metarl.common.files import write_report
from metarl.experiments.report import read_run
from metarl.runs import EVAL_FILE, read_metrics

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ["ant-vel", "ant-dir", "ant-goal", "humanoid-dir", "hopper-params", "walker-params"]
SCALE = {"meta_batch_size": 20, "episodes_per_task": 10, "iterations": 100, "eval_tasks": 20,
         "eval_episodes_per_task": 10, "eval_every": 25}
START_ITERATIONS, END_ITERATIONS = 5, 10


def command(family: str, scale: dict) -> str:
    return (f"metarl train --env {family} --algo anil --seed 0 --set "
            + " ".join(f"{k}={v}" for k, v in scale.items()))


def summary(run_dir: Path) -> dict:
    """The check's numbers from a run's metrics, and its held-out returns after 0..3 steps (the final evaluation;
    an unfinished run's latest evaluation during training)."""
    r = read_run(run_dir)
    metrics = [m for m in read_metrics(run_dir) if "returns/post_adaptation" in m]
    first, last = metrics[:START_ITERATIONS], metrics[-END_ITERATIONS:]
    start = statistics.mean(m["returns/post_adaptation"] for m in first) if first else math.nan
    pre = statistics.mean(m["returns/pre_adaptation"] for m in last) if last else math.nan
    post = statistics.mean(m["returns/post_adaptation"] for m in last) if last else math.nan
    if r.finished and (run_dir / EVAL_FILE).is_file():
        held_out = [r.eval["returns"][f"return_step_{k}"] for k in range(EVAL_STEPS + 1)]
    else:
        evals = [m for m in read_metrics(run_dir) if "eval/return_step_1" in m]
        held_out = [evals[-1][f"eval/return_step_{k}"] for k in range(EVAL_STEPS + 1)] if evals else [math.nan] * 4
    times = [m["time/iteration_s"] for m in metrics if "time/iteration_s" in m]
    return {"iterations": r.iterations_done, "of": r.cfg.iterations, "finished": r.finished, "start": start,
            "end_pre": pre, "end_post": post, "held_out": held_out,
            "learns": bool(post > pre and post > start), "iteration_s": statistics.median(times) if times else None}


def markdown(result: dict) -> str:
    steps = " | ".join(f"held-out after {k}" for k in range(EVAL_STEPS + 1))
    lines = [f"| family | iterations | start (post) | end: pre | end: post | learns | {steps} | s / iteration |",
             "| --- | --- | --- | --- | --- | --- | " + "--- | " * (EVAL_STEPS + 1) + "--- |"]
    for family, row in result["families"].items():
        its = row["iterations"] if row["finished"] else f"iteration {row['iterations']} of {row['of']}"
        verdict = ("yes" if row["learns"] else "**no**") if row["finished"] else "not yet"
        speed = f"{row['iteration_s']:.1f}" if row["iteration_s"] else "-"
        lines.append(f"| `{family}` | {its} | {row['start']:.1f} | {row['end_pre']:.1f} | {row['end_post']:.1f} | "
                     f"{verdict} | " + " | ".join(f"{v:.1f}" for v in row["held_out"]) + f" | {speed} |")
    scale = ", ".join(f"{k}={v}" for k, v in result["scale"].items())
    lines += ["", f"ANIL, seed 0, each family's preset at a reduced scale ({scale}; the rest as "
              "configs/<family>.yaml). "
              f"start: mean post-adaptation training return of the first {START_ITERATIONS} iterations; end: means of "
              f"the last {END_ITERATIONS}; learns: end post above end pre and above start. Held-out: the final "
              "policy's return on the evaluation's tasks after k adaptation steps (0.1, then 0.05). Each row's "
              "command: `metarl train --env FAMILY --algo anil --seed 0 --set "
              + " ".join(f"{k}={v}" for k, v in result["scale"].items())
              + f"`; the table: `{result['command']}`, {result['date']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "studies" / "family_learning")
    parser.add_argument("--published", type=Path,
                        default=REPO / "benchmarks" / "results" / "studies" / "family_learning_runs")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "family_learning")
    parser.add_argument("--no-train", action="store_true", help="only report the published runs")
    parser.add_argument("--publish-unfinished", action="store_true",
                        help="publish every run under --runs as it stands and report (train nothing)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="change the scale (smoke tests only; the table states it)")
    args = parser.parse_args(argv)
    scale = {**SCALE, **{k: int(v) for k, v in (item.split("=", 1) for item in args.set)}}
    result = {"command": " ".join(["python", "benchmarks/studies/family_learning.py",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "scale": scale, "families": {}}
    for family in args.families:
        name = f"{family}-anil-reduced-seed0"
        run_dir, published = args.runs / name, args.published / name
        done = (published / EVAL_FILE).is_file() and read_run(published).finished
        if not done and not args.no_train:
            if args.publish_unfinished:
                if run_dir.is_dir():
                    publish(run_dir, args.published)
            else:
                source = run_dir if run_dir.is_dir() else published if published.is_dir() else None
                if source is published:  # resume the published copy of an unfinished run
                    shutil.copytree(published, run_dir)
                print(f"== {family}: {command(family, scale)}", flush=True)
                run_variant(run_dir, family, {"algo": "anil", "seed": 0, **scale})
                publish(run_dir, args.published)
        if published.is_dir():
            result["families"][family] = {**summary(published), "command": command(family, scale)}
    write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
