"""Cost of the learned inner-loop rules (Meta-SGD, KFO) and of depth per meta-iteration, measured side by side.

The depth study's variants (benchmarks/studies/depth.py: MAML with one hidden layer of 100 units under sgd, meta-sgd
and kfo, and two and four layers under sgd) each get a Trainer at the family's preset (default nav2d, the study's
protocol); then, round by round and variant by variant (interleaved, so a change of machine load falls on every
variant alike), each takes one meta-iteration (`Trainer.step`: sampling, inner loop and TRPO update) on `--threads`
torch threads. The first iteration of each is a warm-up and is not counted. Every variant samples the same number
of env steps, so the iteration times compare directly; issue 36 asks kfo's at most 1.3x sgd's with the same policy.
Writes benchmarks/results/speed/inner_optimizer_time.{json,md}.

    python benchmarks/inner_optimizer_time.py                          # nav2d, 3 rounds
    python benchmarks/inner_optimizer_time.py --quick --out /tmp/iot   # tiny sizes, a smoke test
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUICK = {"meta_batch_size": 2, "episodes_per_task": 2, "horizon": 10, "sampler_threads": 1}
BASELINE = "depth1"  # the rules are compared with sgd on the same (shallow) policy


def depth_variants() -> dict:
    """The depth study's variants: name -> config overrides."""
    sys.path.insert(0, str(REPO / "benchmarks" / "studies"))
    try:
        from depth import VARIANTS
    finally:
        sys.path.remove(str(REPO / "benchmarks" / "studies"))
    return VARIANTS


def measure(env: str, rounds: int, threads: int, quick: bool) -> dict:
    import torch

    from metarl.config import load_config
    from metarl.runs import preset_path
    from metarl.trainer import Trainer

    base = {"algo": "maml", "update_threads": threads, "adaptive_update_threads": False, **(QUICK if quick else {})}
    variants = depth_variants()
    trainers = {name: Trainer(load_config(preset_path(env), overrides={**base, **over}))
                for name, over in variants.items()}
    times: dict = {name: {"iteration_s": [], "sampling_s": [], "update_s": []} for name in variants}
    try:
        for round_ in range(rounds + 1):  # round 0: warm-up
            for name, trainer in trainers.items():
                torch.set_num_threads(threads)
                metrics = trainer.step()
                if round_ == 0:
                    continue
                for key in times[name]:
                    times[name][key].append(metrics[f"time/{key}"])
                print(f"{env} {name:16s} iteration {metrics['time/iteration_s']:6.2f} s  "
                      f"update {metrics['time/update_s']:6.2f} s", flush=True)
    finally:
        for trainer in trainers.values():
            trainer.close()
    return {name: {**{key: statistics.median(values) for key, values in t.items()},
                   **{f"{key}_runs": values for key, values in t.items()}} for name, t in times.items()}


def markdown(result: dict) -> str:
    from metarl.common.provenance import machine_line
    lines = ["| family | variant | iteration (s) | sampling and inner loop (s) | update (s) | "
             f"iteration vs. {BASELINE} sgd | update vs. {BASELINE} sgd |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for env, rows in result["envs"].items():
        base = rows[BASELINE]
        for name, r in rows.items():
            lines.append(f"| {env} | {name} | {r['iteration_s']:.2f} | {r['sampling_s']:.2f} | {r['update_s']:.2f} | "
                         f"{r['iteration_s'] / base['iteration_s']:.2f}x | {r['update_s'] / base['update_s']:.2f}x |")
    lines += ["", f"MAML at each family's preset with the depth study's variants (benchmarks/studies/depth.py; hidden "
              f"layers of 100 units), one meta-iteration per variant per round after a warm-up, median of "
              f"{result['rounds']} interleaved rounds, {result['threads']} torch threads. "
              f"{machine_line(result['machine'])}, {result['date']}. "
              f"Command: `{result['command']}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from metarl.common.provenance import machine
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["nav2d"], choices=["nav2d", "cheetah-vel", "cheetah-dir"])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds after the warm-up (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing useful")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "inner_optimizer_time")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        parser.error(f"--rounds and --threads must be >= 1, got {args.rounds} and {args.threads}")

    from metarl.common.files import write_report
    result = {"command": " ".join(["python", "benchmarks/inner_optimizer_time.py",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
              "threads": args.threads, "quick": args.quick,
              "machine": machine(),
              "envs": {env: measure(env, args.rounds, args.threads, args.quick) for env in args.envs}}
    text = markdown(result)
    write_report(args.out, result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
