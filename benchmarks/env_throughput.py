"""Env steps per second: the batched HalfCheetah form against raw MuJoCo and a naive gymnasium vector env.

Three measurements, in one process, stepping random actions (actions drawn before the clock starts):
  batched  make_batched("cheetah-dir", tasks * episodes, num_threads=T) for each T in --threads; tasks set with
           set_attr("task", ...), reset with a seed, then one episode (horizon steps) timed;
  raw      mujoco.mj_step(model, data, 5) on one MjData of gymnasium's half_cheetah.xml (5 substeps = one env
           step), with random ctrl: the cost of the physics alone, the ceiling for one thread;
  naive    gymnasium SyncVectorEnv of `naive_envs` gymnasium.make("HalfCheetah-v5") for horizon steps.
Each is run --repeats times; the table and the JSON report the median rate (every repeat is kept in the JSON).

    python benchmarks/env_throughput.py                 # full sizes, writes benchmarks/results/speed/env_throughput.json
    python benchmarks/env_throughput.py --quick --out /tmp/x.json   # small sizes, a smoke test
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import gymnasium
import gymnasium.envs.mujoco  # not imported by `import gymnasium`; needed for the model's path
import metarl.envs
import mujoco
import numpy as np

from metarl.common.files import write_json
from metarl.common.provenance import machine

if "torch" in sys.modules:  # not needed here; if something imported it, keep it from competing for cores
    sys.modules["torch"].set_num_threads(1)

FULL = dict(tasks=40, episodes=20, horizon=200, raw_steps=20_000, naive_envs=40)
QUICK = dict(tasks=4, episodes=2, horizon=20, raw_steps=400, naive_envs=4)
CHEETAH_XML = Path(gymnasium.envs.mujoco.__file__).parent / "assets" / "half_cheetah.xml"
FRAME_SKIP = 5


def bench_batched(sizes: dict, num_threads: int, seed: int) -> tuple[int, float]:
    """(env steps, seconds) for one episode of tasks x episodes batched copies."""
    copies, horizon = sizes["tasks"] * sizes["episodes"], sizes["horizon"]
    env = metarl.envs.make_batched("cheetah-dir", copies, num_threads=num_threads)
    rng = np.random.default_rng(seed)
    tasks = env.sample_tasks(rng, sizes["tasks"])
    env.set_attr("task", [task for task in tasks for _ in range(sizes["episodes"])])
    env.reset(seed=seed)
    actions = rng.uniform(-1.0, 1.0, size=(horizon, copies, 6))
    start = time.perf_counter()
    for t in range(horizon):
        env.step(actions[t])
    seconds = time.perf_counter() - start
    env.close()
    return copies * horizon, seconds


def bench_raw(sizes: dict, seed: int) -> tuple[int, float]:
    """(env steps, seconds) of bare mj_step with 5 substeps on one MjData, reset every horizon steps."""
    model = mujoco.MjModel.from_xml_path(str(CHEETAH_XML))
    data = mujoco.MjData(model)
    steps, horizon = sizes["raw_steps"], sizes["horizon"]
    ctrl = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(steps, model.nu))
    start = time.perf_counter()
    for t in range(steps):
        if t % horizon == 0:
            mujoco.mj_resetData(model, data)
        data.ctrl[:] = ctrl[t]
        mujoco.mj_step(model, data, FRAME_SKIP)
    seconds = time.perf_counter() - start
    return steps, seconds


def bench_naive(sizes: dict, seed: int) -> tuple[int, float]:
    """(env steps, seconds) of a SyncVectorEnv of gymnasium HalfCheetah-v5 envs for one episode."""
    n, horizon = sizes["naive_envs"], sizes["horizon"]
    env = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("HalfCheetah-v5")] * n)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(horizon, n, 6)).astype(np.float32)
    start = time.perf_counter()
    for t in range(horizon):
        env.step(actions[t])
    seconds = time.perf_counter() - start
    env.close()
    return n * horizon, seconds


def measure(fn, repeats: int) -> dict:
    """Run `fn(seed)` `repeats` times; the median rate, and every repeat."""
    runs = [fn(seed) for seed in range(repeats)]
    rates = [steps / seconds for steps, seconds in runs]
    return {"steps_per_s": statistics.median(rates), "steps_per_repeat": runs[0][0],
            "all_steps_per_s": rates, "all_seconds": [seconds for _, seconds in runs]}


def machine_info() -> dict:
    # Other processes on the machine distort the rates; a load near or above usable_cpus says so.
    return machine(usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                   gymnasium=gymnasium.__version__,
                   load_average_at_start=os.getloadavg() if hasattr(os, "getloadavg") else None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is reported")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="num_threads of the batched form")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed" / "env_throughput.json")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    sizes = QUICK if args.quick else FULL
    machine = machine_info()

    results = {}
    for threads in args.threads:
        results[f"batched_T{threads}"] = measure(lambda seed, t=threads: bench_batched(sizes, t, seed), args.repeats)
    results["raw_mj_step"] = measure(lambda seed: bench_raw(sizes, seed), args.repeats)
    results["naive_sync_vector"] = measure(lambda seed: bench_naive(sizes, seed), args.repeats)
    ratios = {}
    for threads in args.threads:
        rate = results[f"batched_T{threads}"]["steps_per_s"]
        ratios[f"batched_T{threads}/raw"] = rate / results["raw_mj_step"]["steps_per_s"]
        ratios[f"batched_T{threads}/naive"] = rate / results["naive_sync_vector"]["steps_per_s"]

    report = {"benchmark": "env_throughput", "statistic": "median over repeats",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None
              else " ".join(["env_throughput.py", *argv]),
              "machine": machine, "config": {"quick": args.quick, "repeats": args.repeats, **sizes},
              "results": results, "ratios": ratios}
    print(f"{'measurement':<20} {'env steps/s':>12} {'steps/repeat':>13}")
    for name, result in results.items():
        print(f"{name:<20} {result['steps_per_s']:>12,.0f} {result['steps_per_repeat']:>13,}")
    for name, ratio in ratios.items():
        print(f"{name:<20} {ratio:>12.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
