"""Seconds per meta-iteration of MAML and ANIL, split into sampling, inner loop (adaptation) and TRPO update.

Runs `--iterations` meta-iterations per (env, algo) at the reference batch sizes (cheetah: 40 tasks x 20 episodes x
200 steps; nav2d: 20 x 20 x 100), after one warm-up iteration, and reports the median. Writes JSON and markdown.

    python benchmarks/iteration_time.py                      # cheetah-dir and nav2d, MAML and ANIL
    python benchmarks/iteration_time.py --envs nav2d --iterations 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from metarl.common.files import write_report
from metarl.common.provenance import machine, machine_line
from metarl.config import load_config
from metarl.trainer import Trainer

REPO = Path(__file__).resolve().parent.parent
PARTS = ["time/sampling_s", "time/adaptation_s", "time/update_s", "time/iteration_s"]


def measure(env: str, algo: str, iterations: int, overrides: dict) -> dict:
    cfg = load_config(REPO / "configs" / f"{env}.yaml", {"algo": algo, **overrides})
    trainer = Trainer(cfg)
    trainer.step()  # warm-up: first-call allocations
    runs = [trainer.step() for _ in range(iterations)]
    trainer.close()
    row = {"env": env, "algo": algo, "tasks": cfg.meta_batch_size, "episodes_per_task": cfg.episodes_per_task,
           "horizon": trainer.horizon, "env_steps": runs[-1]["env_steps"] // (iterations + 1)}
    for key in PARTS:
        row[key.split("/")[1]] = statistics.median(r[key] for r in runs)
    row["env_steps_per_s"] = statistics.median(r["time/env_steps_per_s"] for r in runs)
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=["cheetah-dir", "nav2d"], help="task families (configs/NAME.yaml)")
    parser.add_argument("--algos", nargs="+", default=["maml", "anil"], help="algorithms to time")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per case (median reported)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. cg_iters=5")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "iteration_time",
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    from metarl.config import parse_overrides
    overrides = parse_overrides(args.set)
    rows = []
    for env in args.envs:
        for algo in args.algos:
            row = measure(env, algo, args.iterations, overrides)
            rows.append(row)
            print(f"{env:12s} {algo:5s} sampling {row['sampling_s']:7.2f}s  inner {row['adaptation_s']:6.2f}s  "
                  f"trpo {row['update_s']:7.2f}s  total {row['iteration_s']:7.2f}s", flush=True)
    result = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "date": time.strftime("%Y-%m-%d %H:%M"),
              "machine": machine(),
              "overrides": overrides, "rows": rows}
    lines = [f"Seconds per meta-iteration (median of {args.iterations}), `python benchmarks/{result['command']}`, "
             f"{result['date']}, {machine_line(result['machine'])}.", "",
             "| env | algo | tasks x episodes x horizon | sampling | inner loop | TRPO | total | sampler steps/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['env']} | {r['algo']} | {r['tasks']} x {r['episodes_per_task']} x {r['horizon']} | "
                     f"{r['sampling_s']:.2f} | {r['adaptation_s']:.2f} | {r['update_s']:.2f} | {r['iteration_s']:.2f} | "
                     f"{r['env_steps_per_s']:.0f} |")
    write_report(args.out, result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
