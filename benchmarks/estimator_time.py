"""Cost of each inner-loop estimator and outer loop at the full cheetah-dir protocol, measured side by side.

For each algorithm, one full-protocol meta-batch (the preset: 40 tasks x 20 episodes x 200 steps, one inner step)
is sampled once; then the meta-update (`Trainer.update`) of every variant (estimator reinforce / lvc / dice with
TRPO, and lvc with ProMP's outer loop) runs on it from the same parameters, variants interleaved round by round, on
`--threads` torch threads. Sampling does not depend on the variant (every estimator adapts to the same parameters),
so the iteration time is the sampling time measured here plus each variant's update. Writes
benchmarks/results/speed/estimator_time.{json,md}.

    python benchmarks/estimator_time.py                          # ANIL and MAML, 3 rounds
    python benchmarks/estimator_time.py --quick --out /tmp/est   # tiny sizes, a smoke test
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = (("reinforce", "trpo"), ("lvc", "trpo"), ("dice", "trpo"), ("lvc", "promp"))
QUICK = {"meta_batch_size": 2, "episodes_per_task": 2, "horizon": 10, "hidden_sizes": [8], "sampler_threads": 1}


def measure(algo: str, rounds: int, threads: int, quick: bool) -> dict:
    import torch

    from metarl.config import load_config
    from metarl.runs import preset_path
    from metarl.trainer import Trainer

    base = {"algo": algo, "update_threads": threads, "adaptive_update_threads": False, **(QUICK if quick else {})}
    trainers = {v: Trainer(load_config(preset_path("cheetah-dir"), overrides={**base, "estimator": v[0],
                                                                               "outer": v[1]}))
                for v in VARIANTS}
    first = trainers[VARIANTS[0]]
    t0 = time.perf_counter()
    meta, timing = first.sample_meta_batch()
    sampling_s = time.perf_counter() - t0
    start = {k: v.detach().clone() for k, v in first.policy.state_dict().items()}
    times: dict = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant, trainer in trainers.items():
            trainer.policy.load_state_dict(start)
            if trainer.outer_optimizer is not None:  # a fresh optimiser state each round: the same work
                trainer.outer_optimizer.state.clear()
            torch.set_num_threads(threads)
            t = time.perf_counter()
            trainer.update(meta)
            times[variant].append(time.perf_counter() - t)
            print(f"{algo} {variant[0]:9s} {variant[1]:5s} update {times[variant][-1]:6.2f} s", flush=True)
    for trainer in trainers.values():
        trainer.close()
    return {"sampling_s": sampling_s, "adaptation_s": timing["adaptation_s"],
            "variants": [{"estimator": e, "outer": o, "update_s": statistics.median(times[(e, o)]),
                          "update_runs_s": times[(e, o)]} for e, o in VARIANTS]}


def markdown(result: dict) -> str:
    from metarl.common.provenance import machine_line
    lines = ["| algorithm | estimator | outer loop | update (s) | iteration (s) | vs. reinforce + TRPO |",
             "| --- | --- | --- | --- | --- | --- |"]
    for algo, r in result["algos"].items():
        base = r["sampling_s"] + r["variants"][0]["update_s"]
        for v in r["variants"]:
            total = r["sampling_s"] + v["update_s"]
            lines.append(f"| {algo.upper()} | {v['estimator']} | {v['outer']} | {v['update_s']:.2f} | {total:.2f} | "
                         f"{total / base:.2f}x |")
    sampled = ", ".join(f"{a.upper()} {r['sampling_s']:.1f} s" for a, r in result["algos"].items())
    lines += ["", f"Full-protocol cheetah-dir meta-batch sampled once per algorithm (sampling and inner loop "
              f"{sampled}), each "
              f"variant's update from the same parameters, median of {result['rounds']} interleaved rounds, "
              f"{result['threads']} torch threads; iteration = sampling + update. ProMP: {result['promp_steps']} "
              f"optimiser steps. {machine_line(result['machine'])}, "
              f"{result['date']}. Command: `{result['command']}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from metarl.common.provenance import machine
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["anil", "maml"], choices=["anil", "maml"])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing useful")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "estimator_time")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1:
        parser.error(f"--rounds and --threads must be >= 1, got {args.rounds} and {args.threads}")

    from metarl.common.files import write_report
    from metarl.config import Config
    result = {"command": " ".join(["python", "benchmarks/estimator_time.py", *(sys.argv[1:] if argv is None
                                                                               else argv)]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": args.rounds,
              "threads": args.threads, "quick": args.quick, "promp_steps": Config().promp_steps,
              "machine": machine(),
              "algos": {algo: measure(algo, args.rounds, args.threads, args.quick) for algo in args.algos}}
    text = markdown(result)
    write_report(args.out, result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
