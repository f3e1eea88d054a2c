"""Performance of the full-protocol cheetah-dir meta-iteration against the physics it simulates, side by side.

One run measures, in this order and on this machine:
  1. sampler: env steps/s of metarl's sampler (batched cheetah-dir, policy inference, storage, both cores) for
     40 tasks x 20 episodes x 200 steps; raw `mujoco.mj_step` (the preset's frame skip: substeps per env step) on
     one core stepping the same number of fresh HalfCheetah trajectories; a naive sampler (gymnasium
     SyncVectorEnv of 40 HalfCheetah-v5 at the same frame skip, one torch policy call per step, one process);
  2. a full-protocol cheetah-dir meta-iteration (40 x 20 x 200, one inner step) for MAML and ANIL, each in its own
     process (which also reports its peak memory), with the default's outer loop and inner rule
     (configs/cheetah-dir.yaml: ProMP, 5 Adam steps, Meta-SGD) and, beside it, the papers'
     (configs/cheetah-dir-paper.yaml: TRPO with 10 CG iterations), against the time raw mj_step (called from
     Python) and `mujoco.rollout` (its C loop, one thread) need for the same 320,000 env steps;
  3. scaling of the iteration time with the meta-batch size (10, 20, 40, 80 tasks) and the horizon (50..400).
Results go to benchmarks/results/speed/performance.{json,md}.

    python benchmarks/performance.py            # everything, a few minutes
    python benchmarks/performance.py --quick    # tiny sizes, a smoke test of the script
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

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def preset_frame_skip() -> int:
    """The cheetah-dir preset's frame skip (the protocol's physics: 1 since the papers' rllab cheetah)."""
    from metarl.config import load_config
    from metarl.runs import preset_path
    return load_config(preset_path("cheetah-dir")).frame_skip or 5


def raw_mujoco(num_envs: int, horizon: int, seed: int = 0) -> float:
    """Env steps/s of bare mj_step(model, data, frame skip) on one core over num_envs fresh trajectories of
    `horizon` steps."""
    import mujoco
    from metarl.envs import make_batched
    skip = preset_frame_skip()
    env = make_batched("cheetah-dir", num_envs, num_threads=1, frame_skip=skip)
    env.reset(seed=seed)  # fresh states drawn like the sampler's
    model, datas = env.model, [mujoco.MjData(env.model) for _ in range(num_envs)]
    for d, qpos, qvel in zip(datas, env.qpos, env.qvel):
        d.qpos[:], d.qvel[:] = qpos, qvel
    ctrl = np.random.default_rng(seed).uniform(-1, 1, size=(horizon, num_envs, model.nu))
    start = time.perf_counter()
    for t in range(horizon):
        for i, d in enumerate(datas):
            d.ctrl[:] = ctrl[t, i]
            mujoco.mj_step(model, d, skip)
    return num_envs * horizon / (time.perf_counter() - start)


def raw_rollout(num_envs: int, horizon: int, seed: int = 0) -> float:
    """Env steps/s of `mujoco.rollout` (mj_step in a C loop, no Python per step) on one thread over num_envs fresh
    trajectories of `horizon` steps at the preset's frame skip: the physics' own floor."""
    import mujoco
    from metarl.envs import make_batched
    from mujoco import rollout
    skip = preset_frame_skip()
    env = make_batched("cheetah-dir", num_envs, num_threads=1, frame_skip=skip)
    env.reset(seed=seed)
    model, data = env.model, mujoco.MjData(env.model)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    states = np.empty((num_envs, mujoco.mj_stateSize(model, spec)))
    for i, (qpos, qvel) in enumerate(zip(env.qpos, env.qvel)):
        data.qpos[:], data.qvel[:] = qpos, qvel
        mujoco.mj_getState(model, data, states[i], spec)
    ctrl = np.repeat(np.random.default_rng(seed).uniform(-1, 1, size=(num_envs, horizon, model.nu)), skip, axis=1)
    start = time.perf_counter()
    rollout.rollout(model, data, states, ctrl, nstep=horizon * skip)
    return num_envs * horizon / (time.perf_counter() - start)


def metarl_sampler(tasks: int, episodes: int, horizon: int, threads: int) -> float:
    """Env steps/s of metarl's Sampler with a 2x100 Gaussian MLP choosing actions, as in training."""
    import torch

    from metarl.algorithm.policy import (
        GaussianMLP,
        forward,
        meta_params,
        sample_actions,
    )
    from metarl.sampling.sampler import Sampler
    torch.set_num_threads(1)
    sampler = Sampler("cheetah-dir", tasks, episodes, horizon, num_threads=threads,
                      env_kwargs={"frame_skip": preset_frame_skip()})
    policy = GaussianMLP(sampler.obs_dim, sampler.act_dim)
    params = {k: v.detach() for k, v in meta_params(policy).items()}
    gen = torch.Generator().manual_seed(0)
    task_list = sampler.env.sample_tasks(np.random.default_rng(0), tasks)
    start = time.perf_counter()
    episodes_, _ = sampler.sample(lambda obs: sample_actions(*forward(policy, params, obs), gen), task_list, 0)
    rate = episodes_.num_steps / (time.perf_counter() - start)
    sampler.close()
    return rate


def naive_sampler(num_envs: int, horizon: int, episodes: int = 3) -> float:
    """Env steps/s of a gymnasium SyncVectorEnv of HalfCheetah-v5 with one torch policy call per step."""
    import gymnasium
    import torch
    from metarl.envs.half_cheetah import _model_load_warnings

    from metarl.algorithm.policy import GaussianMLP
    torch.set_num_threads(1)
    with _model_load_warnings():
        skip = preset_frame_skip()
        env = gymnasium.vector.SyncVectorEnv([lambda: gymnasium.make("HalfCheetah-v5", frame_skip=skip)] * num_envs)
    policy = GaussianMLP(17, 6)
    start = time.perf_counter()
    for episode in range(episodes):
        obs, _ = env.reset(seed=episode)
        for _ in range(horizon):
            with torch.no_grad():
                mean, log_std = policy(torch.as_tensor(obs, dtype=torch.float32))
                action = torch.normal(mean, log_std.exp()).clamp(-1, 1)
            obs, *_ = env.step(action.numpy())
    rate = episodes * num_envs * horizon / (time.perf_counter() - start)
    env.close()
    return rate


def iteration_in_subprocess(algo: str, overrides: list[str], iterations: int, preset: str = "cheetah-dir") -> dict:
    """Median metrics of `iterations` meta-iterations (after a warm-up) of `preset` in a fresh process, with its
    peak RSS."""
    return iterations_in_subprocess([(preset, [f"algo={algo}", *overrides])], iterations)[0]


def iterations_in_subprocess(jobs: list[tuple[str, list[str]]], iterations: int) -> list[dict]:
    """iteration_in_subprocess for several (preset, overrides) one after another in one fresh process (one start-up
    for all; each after its own warm-up). The peak RSS is the process's: meaningful for the first job only."""
    code = ("import json, statistics, sys;"
            "from metarl.config import load_config, parse_overrides;"
            "from metarl.trainer import Trainer, resolve_device, resolve_fvp_precision;"
            "from metarl.runs import preset_path\n"
            "for preset, overrides in json.loads(sys.argv[1]):\n"
            " cfg = load_config(preset_path(preset), parse_overrides(overrides));"
            " t = Trainer(cfg); t.step();"
            f" runs = [t.step() for _ in range({iterations})];"
            " keys = [k for k in runs[0] if k.startswith('time/')];"
            " out = {k: statistics.median(r[k] for r in runs) for k in keys};"
            # VmHWM: this process's own peak (ru_maxrss would include the parent's, kept across fork/exec).
            " out['peak_rss_mb'] = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0]) / 1024;"
            " out['env_steps'] = runs[0]['env_steps'] // 2;"
            " out['fvp_precision'] = resolve_fvp_precision(cfg.fvp_precision, resolve_device(cfg.device));"
            " out['outer'] = cfg.outer; out['inner_optimizer'] = cfg.inner_optimizer;"
            " out['promp_max_kl'] = cfg.promp_max_kl;"
            " print('RESULT', json.dumps(out), flush=True)")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(jobs)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"meta-iteration run failed:\n{proc.stderr[-2000:]}")
    return [json.loads(ln[len("RESULT "):]) for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing useful")
    parser.add_argument("--iterations", type=int, default=1, help="timed meta-iterations per algorithm (median)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds of the sampler measurements "
                        "(median reported)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides for the meta-iteration runs (e.g. fvp_subsample=1.0)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "performance",
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    tasks, episodes, horizon = (4, 2, 20) if args.quick else (40, 20, 200)
    # --quick: tiny sizes and one thread each, so that the smoke test costs seconds
    quick_sizes = ["hidden_sizes=[8]", "sampler_threads=1", "update_threads=1", "cg_iters=2"]
    sizes = ["meta_batch_size=4", "episodes_per_task=2", "horizon=20", *quick_sizes] if args.quick else []
    result = {"command": " ".join(["python", "benchmarks/performance.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": args.quick,
              "machine": _machine(), "load_average_at_start": os.getloadavg()[0], "frame_skip": preset_frame_skip()}

    print("1. sampler (env steps/s) ...", flush=True)
    # Interleaved repeats, medians reported: the three are measured under the same conditions each round.
    rounds = [(raw_mujoco(tasks * episodes, horizon, seed=r), metarl_sampler(tasks, episodes, horizon, threads=2),
               naive_sampler(tasks, horizon), raw_rollout(tasks * episodes, horizon, seed=r))
              for r in range(args.repeats)]
    raw, ours, naive, floor = (statistics.median(column) for column in zip(*rounds))
    result["sampler"] = {"metarl_steps_per_s": ours, "raw_mj_step_1core_steps_per_s": raw,
                         "rollout_1core_steps_per_s": floor,
                         "naive_syncvector_steps_per_s": naive, "metarl_over_raw": ours / raw,
                         "metarl_over_naive": ours / naive, "repeats": args.repeats,
                         "rounds": [dict(zip(("raw", "metarl", "naive", "rollout"), r)) for r in rounds]}
    for r in rounds:
        print(f"   round: metarl {r[1]:.0f}  raw {r[0]:.0f}  naive {r[2]:.0f}  -> {r[1] / r[0]:.2f}x raw, "
              f"{r[1] / r[2]:.2f}x naive", flush=True)
    print(f"   median: metarl {ours:.0f}  raw mj_step {raw:.0f}  naive {naive:.0f}  "
          f"-> {ours / raw:.2f}x raw, {ours / naive:.2f}x naive", flush=True)

    print("2. full-protocol meta-iteration ...", flush=True)
    iters, paper = {}, {}
    jobs = [(algo, preset, into) for algo in ("maml", "anil")
            for preset, into in (("cheetah-dir", iters), ("cheetah-dir-paper", paper))]
    if args.quick:  # the smoke test: one process for all four (its peak RSS is then the process's)
        quick_runs = iter(iterations_in_subprocess(
            [(preset, [f"algo={algo}", *sizes, *args.set]) for algo, preset, _ in jobs], args.iterations))
    for algo, preset, into in jobs:
        # The floor measured right before and after these iterations (a shared machine's speed drifts between
        # the sections of a run): the ratio compares times taken minutes apart at most.
        before = raw_rollout(tasks * episodes, horizon, seed=11)
        m = (next(quick_runs) if args.quick else
             iteration_in_subprocess(algo, [*sizes, *args.set], args.iterations, preset))
        adjacent = statistics.mean([before, raw_rollout(tasks * episodes, horizon, seed=12)])
        # Physics time for the same env steps (the inner and the post-adaptation batch): mj_step called from
        # Python at the sampler section's rate, and mujoco.rollout's C loop (the floor) at the adjacent
        # one.
        physics_s, floor_s = m["env_steps"] / raw, m["env_steps"] / adjacent
        m["rollout_adjacent_steps_per_s"] = adjacent
        into[algo] = {**m, "raw_physics_s": physics_s, "over_raw_physics": m["time/iteration_s"] / physics_s,
                      "rollout_physics_s": floor_s, "over_rollout": m["time/iteration_s"] / floor_s}
        print(f"   {algo} ({preset}, {m['outer']}): {m['time/iteration_s']:.1f}s (sampling "
              f"{m['time/sampling_s']:.1f}, inner {m['time/adaptation_s']:.1f}, update {m['time/update_s']:.1f})"
              f" = {into[algo]['over_raw_physics']:.2f}x raw physics ({physics_s:.1f}s); peak RSS "
              f"{m['peak_rss_mb']:.0f} MB", flush=True)
    for algo in ("maml", "anil"):
        iters[algo]["update_over_paper"] = iters[algo]["time/update_s"] / paper[algo]["time/update_s"]
    iters["maml_over_anil"] = iters["maml"]["time/iteration_s"] / iters["anil"]["time/iteration_s"]
    result["iteration"], result["iteration_paper"] = iters, paper

    print("3. scaling (ANIL) ...", flush=True)
    scale_eps, scale_h = ("episodes_per_task=2", [10, 20]) if args.quick else ("episodes_per_task=5", [50, 100, 200, 400])
    scaling = {"meta_batch_size": {}, "horizon": {}}
    quick = quick_sizes if args.quick else []
    # one process for every point (one start-up): the scaling is of time alone
    sizes_k = [2, 4] if args.quick else [10, 20, 40, 80]
    points = [[scale_eps, f"meta_batch_size={k}", "horizon=50", *quick, *args.set] for k in sizes_k] + [
        [scale_eps, "meta_batch_size=10", f"horizon={h}", *quick, *args.set] for h in scale_h]
    measured = iterations_in_subprocess([("cheetah-dir", ["algo=anil", *point]) for point in points], 1)
    scaling["meta_batch_size"] = {k: m["time/iteration_s"] for k, m in zip(sizes_k, measured)}
    scaling["horizon"] = {h: m["time/iteration_s"] for h, m in zip(scale_h, measured[len(sizes_k):])}
    for axis, times in scaling.items():
        first_k, first_t = next(iter(times.items()))
        line = ", ".join(f"{k}: {t:.2f}s ({t / first_t / (k / first_k):.2f})" for k, t in times.items())
        print(f"   {axis}: {line}  (in brackets: time per unit relative to the smallest; 1.00 = linear)", flush=True)
    result["scaling"] = scaling

    from metarl.common.files import write_report
    write_report(args.out, result, _markdown(result))
    print(_markdown(result))


# The performance goals of the full-protocol meta-iteration (the project's issue 33): ANIL's and MAML's iteration
# against `mujoco.rollout`'s time for the same env steps on one core, and MAML's peak resident memory.
ITERATION_GOALS = {"anil": 2.5, "maml": 3.5}
MAML_RSS_GOAL_GB = 2.0




def _machine() -> dict:
    from metarl.common.provenance import machine
    return machine()


def _markdown(r: dict) -> str:
    s, it = r["sampler"], r["iteration"]
    m_ = r["machine"]
    from metarl.common.provenance import machine_line
    lines = [f"Measured by `{r['command']}` on {r['date']}, {machine_line(m_)} "
             f"(load average at start {r['load_average_at_start']:.2f}).", "",
             "| measure | value | ratio |", "| --- | --- | --- |",
             f"| sampler, metarl (both cores; median of {s['repeats']} interleaved rounds) | "
             f"{s['metarl_steps_per_s']:.0f} steps/s | "
             f"{s['metarl_over_raw']:.2f}x raw mj_step, {s['metarl_over_naive']:.2f}x naive |",
             f"| raw `mj_step` x{r.get('frame_skip', 5)}, one core | {s['raw_mj_step_1core_steps_per_s']:.0f} steps/s | 1.00 |",
             *([f"| `mujoco.rollout` (C loop), one core | {s['rollout_1core_steps_per_s']:.0f} steps/s | "
                f"{s['rollout_1core_steps_per_s'] / s['raw_mj_step_1core_steps_per_s']:.2f}x raw mj_step |"]
               if "rollout_1core_steps_per_s" in s else []),
             f"| naive SyncVectorEnv + torch | {s['naive_syncvector_steps_per_s']:.0f} steps/s | |"]
    paper = r.get("iteration_paper", {})
    for algo in ("maml", "anil"):
        for m, name in ((it[algo], "default"), (paper.get(algo), "papers' TRPO")):
            if m is None:
                continue
            beside = ", measured beside it" if "rollout_adjacent_steps_per_s" in m else ""
            rollout = f", {m['over_rollout']:.2f}x rollout ({m['rollout_physics_s']:.1f}s{beside})" \
                if "over_rollout" in m else ""
            outer = m.get("outer", "trpo")
            rule = m.get("inner_optimizer", "sgd")
            how = (f"TRPO, {m.get('fvp_precision', 'float32')} Fisher products" if outer == "trpo"
                   else "ProMP, 5 Adam steps" + (f", max KL {m['promp_max_kl']:g}" if m.get("promp_max_kl") else ""))
            how += f", {rule} inner rule" if rule != "sgd" else ""
            label = (f"{algo.upper()} meta-iteration, {name if paper else 'the preset'} ({how}; sampling / inner / "
                     "update)")
            lines.append(f"| {label} | {m['time/iteration_s']:.1f}s "
                         f"({m['time/sampling_s']:.1f} / {m['time/adaptation_s']:.1f} / {m['time/update_s']:.1f}) | "
                         f"{m['over_raw_physics']:.2f}x raw mj_step ({m['raw_physics_s']:.1f}s){rollout} |")
            lines.append(f"| {algo.upper()} peak memory (RSS), {name if paper else 'the preset'} | "
                         f"{m['peak_rss_mb']:.0f} MB | |")
        if "update_over_paper" in it[algo]:
            ratio = it[algo]["update_over_paper"]
            lines.append(f"| {algo.upper()} update: the default's over the papers' TRPO | | {ratio:.2f}x |")
    lines.append(f"| MAML / ANIL iteration time | | {it['maml_over_anil']:.2f} |")
    if "update_over_paper" in it["anil"]:  # issue 52: the default must not slow the flagship down
        ratio = it["anil"]["update_over_paper"]
        lines.append(f"| goal: ANIL's default update no slower than the papers' TRPO | {ratio:.2f}x | "
                     f"{'met' if ratio <= 1.0 else 'not met'} |")
    for algo, limit in ITERATION_GOALS.items():
        if "over_rollout" in it[algo]:
            ratio = it[algo]["over_rollout"]
            lines.append(f"| goal: {algo.upper()} iteration at most {limit}x rollout | {ratio:.2f}x | "
                         f"{'met' if ratio <= limit else 'not met'} |")
    # the table's MB are MiB (VmHWM / 1024); the goal's GB are 1e9 bytes
    peak_gb = it["maml"]["peak_rss_mb"] * 2**20 / 1e9
    lines.append(f"| goal: MAML peak memory under {MAML_RSS_GOAL_GB:.0f} GB | {peak_gb:.2f} GB | "
                 f"{'met' if peak_gb < MAML_RSS_GOAL_GB else 'not met'} |")
    for axis, times in r["scaling"].items():
        first_k, first_t = next(iter(times.items()))
        cells = ", ".join(f"{k}: {t:.2f}s" for k, t in times.items())
        per = ", ".join(f"{t / first_t / (int(k) / int(first_k)):.2f}" for k, t in times.items())
        lines.append(f"| scaling with {axis} | {cells} | per-unit time {per} (1.00 = linear) |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
