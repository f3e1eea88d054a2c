"""The TRPO update's time by torch thread count, on an idle machine and beside a busy process, side by side.

On a 2-core machine two torch threads beside a busy process are several times slower than one (an OpenMP thread
waits for a sibling the scheduler has put aside), while on an idle machine two are faster. OpenMP's wait policy
does not give both: PASSIVE (waiting threads sleep) is safe beside a busy process but slow on an idle machine,
the default spins and is the reverse. So metarl adapts the count (`adaptive_update_threads`, metarl/common/threads.py):
before each update it measures the CPU time other processes used and drops a thread per core they hold. This
measures, each case in a fresh process (OpenMP reads its wait policy once), `--updates` TRPO updates of the nav2d
protocol (20 tasks x 20 episodes x 100 steps) after one warm-up, with one thread, two, and two adaptive, under the
default wait policy and under PASSIVE, alone and beside one process spinning on a core. Cases run interleaved, in
one run; the table gives the median update time and the threads the adaptive update chose.

    python benchmarks/update_threads.py                 # writes benchmarks/results/speed/update_threads.{json,md}
    python benchmarks/update_threads.py --quick --rounds 1 --updates 1 --out /tmp/x    # a smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POLICIES = ("default", "PASSIVE")  # default: OMP_WAIT_POLICY unset (libgomp spins a while, then sleeps)
SETTINGS = {"1": (1, False), "2": (2, False), "2 adaptive": (2, True)}  # update_threads, adaptive_update_threads
LOADS = ("idle", "busy")


def child(setting: str, updates: int, quick: bool) -> None:
    """In a fresh process: time `updates` TRPO updates of the nav2d protocol; print JSON seconds and threads."""
    import torch

    from metarl.config import load_config
    from metarl.runs import preset_path
    from metarl.trainer import Trainer

    sizes = {"meta_batch_size": 2, "episodes_per_task": 2, "hidden_sizes": [16]} if quick else {}
    threads, adaptive = SETTINGS[setting]
    cfg = load_config(preset_path("nav2d"), {**sizes, "update_threads": threads, "adaptive_update_threads": adaptive,
                                             "sampler_threads": 1})
    trainer = Trainer(cfg)
    try:
        times, used = [], []
        for _ in range(updates + 1):  # the first is a warm-up
            metrics = trainer.step()
            times.append(metrics["time/update_s"])
            used.append(metrics["threads/update"])
    finally:
        trainer.close()
    print(json.dumps({"update_s": times[1:], "threads": used[1:], "torch_threads_seen": torch.get_num_threads()}))


def spinner() -> subprocess.Popen:
    """A process that keeps one core busy (as a second experiment or a compile would)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(policy: str, setting: str, load: str, updates: int, quick: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    busy = spinner() if load == "busy" else None
    try:
        time.sleep(0.2 if busy else 0)
        out = subprocess.run([sys.executable, __file__, "--child", setting, "--updates", str(updates),
                              *(["--quick"] if quick else [])], env=env, capture_output=True, text=True, check=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    from metarl.common.provenance import machine, machine_line
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=3, help="timed updates per case (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all cases, interleaved")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "update_threads")
    parser.add_argument("--child", choices=SETTINGS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, args.updates, args.quick)
        return
    load_at_start = os.getloadavg()[0]
    cases = [(p, t, load) for load in LOADS for p in POLICIES for t in SETTINGS]
    times: dict[str, list[float]] = {f"{p}/{t}/{load}": [] for p, t, load in cases}
    used: dict[str, list[int]] = {f"{p}/{t}/{load}": [] for p, t, load in cases}
    for r in range(args.rounds):
        for p, t, load in cases:
            key = f"{p}/{t}/{load}"
            out = measure(p, t, load, args.updates, args.quick)
            times[key] += out["update_s"]
            used[key] += out["threads"]
            print(f"round {r + 1}/{args.rounds}  wait policy {p:<7}  update threads {t:<10}  {load:<4}  "
                  f"median {statistics.median(times[key]):.2f}s  threads used {sorted(set(used[key]))}", flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    rows = [{"omp_wait_policy": p, "update_threads": t, "load": load, "update_s": median[f"{p}/{t}/{load}"],
             "over_best": median[f"{p}/{t}/{load}"] / min(median[f"{q}/{u}/{load}"] for q, u, ld in cases
                                                         if ld == load),
             "threads_used": sorted(set(used[f"{p}/{t}/{load}"])), "all_update_s": times[f"{p}/{t}/{load}"]}
            for p, t, load in cases]
    result = {"command": " ".join(["python", "benchmarks/update_threads.py", *(argv if argv is not None
                                                                               else sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": machine(load_average_at_start=load_at_start),
              "quick": args.quick, "rows": rows}
    lines = [f"Measured by `{result['command']}` on {result['date']}, {machine_line(result['machine'])} "
             f"(load average at start {load_at_start:.2f}); nav2d protocol, median of "
             f"{args.rounds * args.updates} updates per case; busy = one other process spinning on a core.", "",
             "| machine | OMP_WAIT_POLICY | update threads | threads used | TRPO update | vs. the best on this machine |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['load']} | {row['omp_wait_policy']} | {row['update_threads']} | "
                     f"{', '.join(map(str, row['threads_used']))} | {row['update_s']:.2f} s | {row['over_best']:.2f}x |")
    from metarl.common.files import write_report
    write_report(args.out, result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
