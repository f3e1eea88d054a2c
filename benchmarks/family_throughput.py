"""Env steps per second of every batched MuJoCo family against a bare `mujoco.rollout` of the same model: its floor.

For each family, side by side in one process, on the same copies (tasks x episodes, one model per distinct task
where the task edits the physics), the same initial states and the same random actions:
  metarl  make_batched(family, copies, num_threads=T).step(actions) for --steps env steps from reset;
  floor   mujoco.rollout over the same copies, models and threads, one call per env step of frame-skip simulator
          steps (the same calling pattern, no Python per copy): what the physics alone costs.
Only the first --steps steps of an episode are timed (before random actions end most episodes: a terminated copy is
frozen, which would flatter the batch), --repeats times, alternating the two; the median of each is reported with
their ratio. The families whose observation reads contact forces or centre-of-mass quantities pay one MuJoCo pass per
copy beyond the floor (a forward pass for the ant, as rllab ran one; the humanoid runs its last simulator step per
copy instead of in rollout, the same physics).

    python benchmarks/family_throughput.py            # 40 tasks x 20 episodes; writes benchmarks/results/speed/
    python benchmarks/family_throughput.py --quick --out /tmp/x   # small sizes, a smoke test
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import metarl.envs as envs
import mujoco
import mujoco.rollout
import numpy as np

from metarl.common.files import write_report
from metarl.common.provenance import machine, machine_line

FAMILIES = ["cheetah-dir", "ant-vel", "humanoid-dir", "hopper-params", "walker-params"]
FULL = dict(tasks=40, episodes=20, steps=10)
QUICK = dict(tasks=2, episodes=2, steps=3)
_STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS


def _copies(name: str, sizes: dict, num_threads: int, seed: int):
    """The batched family, reset on `tasks x episodes` copies; the per-copy models and initial states for the
    floor (built from the family's single env, never from the batch's insides)."""
    batch = envs.make_batched(name, sizes["tasks"] * sizes["episodes"], num_threads=num_threads)
    rng = np.random.default_rng(seed)
    tasks = batch.sample_tasks(rng, sizes["tasks"])
    per_copy = [task for task in tasks for _ in range(sizes["episodes"])]
    batch.set_attr("task", per_copy)
    batch.reset(seed=seed)
    single = envs.make(name).unwrapped
    models = []
    for task in tasks:
        single.reset(seed=seed, options={"task": task})
        models += [copy.copy(single.model)] * sizes["episodes"]
    data = mujoco.MjData(models[0])
    states = np.zeros((len(models), mujoco.mj_stateSize(models[0], _STATE)))
    for i, (model, qpos, qvel) in enumerate(zip(models, batch.qpos, batch.qvel)):
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.qvel[:] = qpos, qvel
        mujoco.mj_getState(model, data, states[i], _STATE)
    frame_skip = getattr(single, "frame_skip", 1)
    single.close()
    return batch, models, states, frame_skip


def bench_family(name: str, sizes: dict, num_threads: int, repeats: int) -> dict:
    copies, steps = sizes["tasks"] * sizes["episodes"], sizes["steps"]
    ours, floor = [], []
    for repeat in range(repeats):
        batch, models, states, frame_skip = _copies(name, sizes, num_threads, seed=repeat)
        nu = batch.single_action_space.shape[0]
        actions = np.random.default_rng(repeat).uniform(-1.0, 1.0, (steps, copies, nu))
        controls = np.clip(actions, batch.single_action_space.low, batch.single_action_space.high)
        scale = models[0].actuator_ctrlrange[:, 1] if name == "humanoid-dir" else 1.0  # its normalised actions
        start = time.perf_counter()
        for t in range(steps):
            batch.step(actions[t])
        ours.append(copies * steps / (time.perf_counter() - start))
        batch.close()
        rollout = mujoco.rollout.Rollout(nthread=num_threads if num_threads > 1 else 0)
        datas = [mujoco.MjData(models[0]) for _ in range(num_threads)]
        out = np.empty((copies, frame_skip, states.shape[1]))
        start = time.perf_counter()
        for t in range(steps):
            ctrl = np.repeat((controls[t] * scale)[:, None, :], frame_skip, axis=1)
            rollout.rollout(models, datas, states, ctrl, nstep=frame_skip, state=out, skip_checks=True)
            states = out[:, -1].copy()
        floor.append(copies * steps / (time.perf_counter() - start))
        rollout.close()
    return {"metarl_steps_per_s": statistics.median(ours), "floor_steps_per_s": statistics.median(floor),
            "over_floor": statistics.median(floor) / statistics.median(ours), "frame_skip": frame_skip,
            "all_metarl": ours, "all_floor": floor}


def markdown(report: dict) -> str:
    m, c = report["machine"], report["config"]
    lines = [f"Env steps per second, median of {c['repeats']} repeats, {c['tasks']} tasks x {c['episodes']} episodes "
             f"= {c['tasks'] * c['episodes']} copies, the first {c['steps']} steps of an episode, "
             f"{c['threads']} threads, {report['date'][:10]} ({machine_line(m)}). "
             f"Generated by `{report['command']}`.", "",
             "| family | frame skip | metarl batched | bare `mujoco.rollout` (floor) | time over the floor |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in report["results"].items():
        lines.append(f"| `{name}` | {r['frame_skip']} | {r['metarl_steps_per_s']:,.0f} | {r['floor_steps_per_s']:,.0f} "
                     f"| {r['over_floor']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=FAMILIES)
    parser.add_argument("--threads", type=int, default=2, help="num_threads of the batch and the floor (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is reported")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed" / "family_throughput",
                        help="writes OUT.json and OUT.md")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be >= 1")
    sizes = QUICK if args.quick else FULL
    results = {}
    for name in args.families:
        results[name] = bench_family(name, sizes, args.threads, args.repeats)
        r = results[name]
        print(f"{name:<14} metarl {r['metarl_steps_per_s']:>10,.0f} steps/s  floor {r['floor_steps_per_s']:>10,.0f}"
              f"  time over the floor {r['over_floor']:.2f}x", flush=True)
    report = {"benchmark": "family_throughput", "statistic": "median over repeats",
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/family_throughput.py" + ("" if argv is None and len(sys.argv) == 1
                                                                    else " " + " ".join(argv or sys.argv[1:])),
              "machine": machine(load_average_at_start=os.getloadavg()),
              "config": {**sizes, "threads": args.threads, "repeats": args.repeats, "quick": args.quick},
              "results": results}
    write_report(args.out, report, markdown(report))
    return report


if __name__ == "__main__":
    main()
