"""Env steps per second of the Meta-World families, against the package's own envs and the physics alone: why the
batch steps copies one by one (issue 56's question of a batched form at the simulator's floor).

For each family, side by side in one process, on `tasks x episodes` copies (the tasks drawn from the family's
training list) with the same random actions, --steps env steps from reset:
  metarl    make_batched(family, copies).step(actions): MetaWorldBatch, one Meta-World env per copy cloned from one
            built env per task type, stepped one by one in this process; and with num_threads=P (--processes),
            the copies split over P worker processes;
  package   the package's own envs (one built by its constructor per task, `set_task`, `reset`, `step`), stepped one
            by one: what a gymnasium SyncVectorEnv of Meta-World envs costs;
  physics   the simulator steps alone, as many as the copies take: `mujoco.mj_step(model, data, nstep=frame skip)`
            per copy per env step on the package's envs' models and data, mocap target and gripper control as their
            last step left them (the floor of any batch, once Meta-World's per-copy Python for rewards and
            observations is gone).
Also the seconds to build each copy: the package's constructor against the batch's clone (build and reset of all
copies, divided by their number). The median of --repeats runs of each is reported.

Needs the metaworld extra (its own environment: it pins mujoco==3.3.0).

    python benchmarks/metaworld_throughput.py            # ML1 reach, push, pick-place and ML10; 20 tasks x 10 episodes
    python benchmarks/metaworld_throughput.py --quick --out /tmp/x   # small sizes, a smoke test
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import metarl.envs as envs
import mujoco
import numpy as np

from metarl.common.files import write_report
from metarl.common.provenance import machine, machine_line

FAMILIES = ["metaworld-ml1:reach", "metaworld-ml1:push", "metaworld-ml1:pick-place", "metaworld-ml10"]
FULL = dict(tasks=20, episodes=10, steps=50)  # the Meta-World paper's MAML meta-batch: 20 tasks x 10 episodes
QUICK = dict(tasks=2, episodes=2, steps=3)


def _batch_speed(name: str, copies: int, per_copy: list, actions: np.ndarray, processes: int, seed: int):
    """(steps per second, seconds to build and reset per copy) of the batch with `processes` worker processes."""
    steps = actions.shape[0]
    start = time.perf_counter()
    batch = envs.make_batched(name, copies, num_threads=processes, max_episode_steps=steps)
    batch.set_attr("task", per_copy)
    batch.reset(seed=seed)
    built = (time.perf_counter() - start) / copies
    start = time.perf_counter()
    for t in range(steps):
        batch.step(actions[t])
    speed = copies * steps / (time.perf_counter() - start)
    batch.close()
    return speed, built


def bench_family(name: str, sizes: dict, repeats: int, processes: int) -> dict:
    from metarl.envs.metaworld import benchmark

    copies, steps = sizes["tasks"] * sizes["episodes"], sizes["steps"]
    family = envs.get_family(name)
    bench = benchmark(family.env_cls.kind, family.env_cls.env_name)  # built once, outside the timings
    ours, workers, package, physics, clone_s, build_s = [], [], [], [], [], []
    for repeat in range(repeats):
        rng = np.random.default_rng(repeat)
        tasks = family.env_cls().sample_tasks(rng, sizes["tasks"])
        per_copy = [task for task in tasks for _ in range(sizes["episodes"])]
        actions = rng.uniform(-1.0, 1.0, (steps, copies, 4)).astype(np.float32)

        speed, built = _batch_speed(name, copies, per_copy, actions, 1, repeat)
        ours.append(speed)
        clone_s.append(built)
        workers.append(_batch_speed(name, copies, per_copy, actions, processes, repeat)[0])

        # the package's envs: one per task (built by the constructor), each stepping its task's copies in turn
        start = time.perf_counter()
        own = []
        for task in tasks:
            env = bench.classes[task.env_name]()
            env.set_task(bench.task_data(task))
            env.reset()
            own.append(env)
        build_s.append((time.perf_counter() - start) / len(tasks))
        start = time.perf_counter()
        for t in range(steps):
            for k, env in enumerate(own):
                env.step(actions[t, k * sizes["episodes"]])
        package.append(len(own) * steps / (time.perf_counter() - start))

        # the physics alone on the package's envs' models and data (each stands for its task's copies)
        start = time.perf_counter()
        for _ in range(steps):
            for env in own:
                for _ in range(sizes["episodes"]):
                    mujoco.mj_step(env.model, env.data, nstep=env.frame_skip)
        physics.append(copies * steps / (time.perf_counter() - start))
        for env in own:
            env.close()
    med = statistics.median
    return {"metarl_steps_per_s": med(ours), "workers_steps_per_s": med(workers),
            "workers_speedup": med(workers) / med(ours), "package_steps_per_s": med(package),
            "physics_steps_per_s": med(physics),
            "physics_share": med(ours) / med(physics), "clone_s_per_copy": med(clone_s),
            "constructor_s_per_copy": med(build_s), "all_metarl": ours, "all_workers": workers, "all_package": package,
            "all_physics": physics}


def markdown(report: dict) -> str:
    m, c = report["machine"], report["config"]
    lines = [f"Env steps per second, median of {c['repeats']} repeats, {c['tasks']} tasks x {c['episodes']} episodes "
             f"= {c['tasks'] * c['episodes']} copies, the first {c['steps']} steps of an episode, "
             f"{report['date'][:10]} ({machine_line(m)}). "
             f"Generated by `{report['command']}` in the metaworld extra's environment.", "",
             f"| family | metarl batch | metarl batch, {c['processes']} worker processes | the package's envs | "
             "physics alone | physics' share of a step | build + reset per copy: clone / the package's constructor |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["results"].items():
        lines.append(f"| `{name}` | {r['metarl_steps_per_s']:,.0f} | {r['workers_steps_per_s']:,.0f} "
                     f"({r['workers_speedup']:.2f}x) | {r['package_steps_per_s']:,.0f} | "
                     f"{r['physics_steps_per_s']:,.0f} | {r['physics_share']:.0%} | "
                     f"{r['clone_s_per_copy'] * 1e3:.0f} ms / {r['constructor_s_per_copy'] * 1e3:.0f} ms |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is reported")
    parser.add_argument("--processes", type=int, default=2, help="worker processes of the second batch (default 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "speed" / "metaworld_throughput",
                        help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.processes < 2:
        parser.error("--repeats must be >= 1 and --processes >= 2")
    sizes = QUICK if args.quick else FULL
    results = {}
    for name in args.families:
        results[name] = r = bench_family(name, sizes, args.repeats, args.processes)
        print(f"{name:<26} metarl {r['metarl_steps_per_s']:>8,.0f} steps/s  {args.processes} processes "
              f"{r['workers_steps_per_s']:>8,.0f}  package {r['package_steps_per_s']:>8,.0f}"
              f"  physics {r['physics_steps_per_s']:>8,.0f}  ({r['physics_share']:.0%} of a step)", flush=True)
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    report = {"benchmark": "metaworld_throughput", "statistic": "median over repeats",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/metaworld_throughput.py" + (f" {argv_text}" if argv_text else ""),
              "machine": machine(load_average_at_start=os.getloadavg()),
              "config": {**sizes, "repeats": args.repeats, "processes": args.processes, "quick": args.quick},
              "results": results}
    write_report(args.out, report, markdown(report))
    return report


if __name__ == "__main__":
    main()
