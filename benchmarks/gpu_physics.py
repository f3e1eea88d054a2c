"""The meta-iteration with the physics on the accelerator (`physics: mjx`) beside the C simulator (`physics: mujoco`),
measured side by side in one run on one machine (issue 55).

1. For each algorithm and each physics, in a fresh process: the cheetah-dir preset at the full protocol (40 tasks x
   20 episodes x 200 steps), the policy and the update on `--device` with the whole meta-batch in one chunk; one
   warm-up meta-iteration (it compiles MJX's step, or loads it from JAX's cache), then `--iterations` timed ones
   (median of sampling / inner loop / update / total).
2. Env steps per second of MJX's batched cheetah (`MJXCheetahBatch.step`: torch actions in, observations and
   rewards out as torch tensors) against MJX's own bare batched step (the jitted `mjx.step` of every world alone, no
   reward, no torch), at the meta-batch's world count, after compilation.
Results: benchmarks/results/speed/gpu_physics.{json,md} (docs/gpu.md includes the table).

    python benchmarks/gpu_physics.py                                  # on a machine with a CUDA GPU and jax[cuda]
    python benchmarks/gpu_physics.py --device cpu --quick --out /tmp/g  # tiny sizes on JAX's CPU backend: a smoke test
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUICK = {"meta_batch_size": 4, "episodes_per_task": 2, "horizon": 20, "hidden_sizes": [8], "sampler_threads": 1,
         "update_threads": 1}
PARTS = ("sampling_s", "adaptation_s", "update_s", "iteration_s")


def child(algo: str, physics: str, device: str, iterations: int, quick: bool) -> None:
    """In a fresh process: a warm-up meta-iteration, then the timed ones; printed as JSON."""
    import torch

    from metarl.config import load_config
    from metarl.runs import preset_path
    from metarl.trainer import Trainer

    sizes = QUICK if quick else {}
    tasks = load_config(preset_path("cheetah-dir"), sizes).meta_batch_size
    cfg = load_config(preset_path("cheetah-dir"), {"algo": algo, "physics": physics, "device": device,
                                                   "adaptive_update_threads": False, "task_chunk": tasks, **sizes})
    trainer = Trainer(cfg)
    cuda = trainer.device.type == "cuda"
    start = time.perf_counter()
    trainer.step()  # compiles (or loads) MJX's step; kernels chosen
    warm_up = time.perf_counter() - start
    steps = []
    for _ in range(iterations):
        if cuda:
            torch.cuda.synchronize()
        steps.append(trainer.step())
    print("RESULT " + json.dumps({"algo": algo, "physics": physics, "device": device, "warm_up_s": warm_up,
                                  **{p: statistics.median(s[f"time/{p}"] for s in steps) for p in PARTS},
                                  "gpu": torch.cuda.get_device_name() if cuda else None}))


def throughput(worlds: int, steps: int, repeats: int) -> dict:
    """MJXCheetahBatch.step against MJX's bare jitted step at `worlds` worlds (frame skip 1), env steps per second."""
    import jax
    import numpy as np
    import torch
    from metarl.envs import mjx as device_physics

    batch = device_physics.make_device_batched("cheetah-dir", worlds, frame_skip=1)
    batch.reset(seed=0)
    actions = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (worlds, 6)), dtype=torch.float32,
                              device=batch.device)
    step = jax.jit(jax.vmap(batch._mjx.step, in_axes=(None, 0)))
    data = batch._data.replace(ctrl=jax.numpy.asarray(actions.cpu().numpy()))

    def ours() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            obs, *_ = batch.step(actions)
        float(obs.sum())  # waits for the device
        return worlds * steps / (time.perf_counter() - start)

    def bare() -> float:
        d = data
        start = time.perf_counter()
        for _ in range(steps):
            d = step(batch._mx, d)
        d.qpos.block_until_ready()
        return worlds * steps / (time.perf_counter() - start)

    ours(), bare()  # compile both
    rounds = [(ours(), bare()) for _ in range(repeats)]
    metarl_sps, bare_sps = (statistics.median(c) for c in zip(*rounds))
    return {"worlds": worlds, "steps": steps, "metarl_steps_per_s": metarl_sps, "bare_mjx_steps_per_s": bare_sps,
            "bare_over_metarl": bare_sps / metarl_sps, "jax_backend": jax.default_backend()}


def _run(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def markdown(result: dict) -> str:
    from metarl.common.provenance import machine_line
    rows = ["| algorithm | physics | meta-iteration (s) | sampling / inner loop / update (s) | vs. the C simulator | "
            "first iteration, compiling (s) |", "|---|---|---|---|---|---|"]
    for r in result["runs"]:
        c = next(x for x in result["runs"] if x["algo"] == r["algo"] and x["physics"] == "mujoco")
        speedup = c["iteration_s"] / r["iteration_s"]
        ratio = "1.0x" if r is c else (f"{speedup:.1f}x faster" if speedup >= 1 else f"{1 / speedup:.1f}x slower")
        rows.append(f"| {r['algo'].upper()} | {r['physics']} | {r['iteration_s']:.2f} | {r['sampling_s']:.2f} / "
                    f"{r['adaptation_s']:.2f} / {r['update_s']:.2f} | {ratio} | {r['warm_up_s']:.1f} |")
    t = result["throughput"]
    gpus = sorted({r["gpu"] for r in result["runs"] if r["gpu"]})
    rows += ["", f"Env steps per second at {t['worlds']} worlds (JAX backend {t['jax_backend']}): metarl's MJX "
             f"cheetah {t['metarl_steps_per_s']:,.0f}, MJX's bare batched step {t['bare_mjx_steps_per_s']:,.0f} "
             f"({t['bare_over_metarl']:.2f}x).", "",
             f"Measured by `{result['command']}` on {result['date']}: {result['protocol']}; median of "
             f"{result['iterations']} meta-iterations after a warm-up; each row a fresh process. Machine: "
             f"{', '.join(gpus) or 'no GPU'}, {machine_line(result['machine'])}, Python {result['machine']['python']}."]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    from metarl.common.provenance import machine
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("ALGO", "PHYSICS", "DEVICE"), help=argparse.SUPPRESS)
    parser.add_argument("--throughput-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--algos", nargs="+", default=["anil", "maml"], choices=["anil", "maml"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="the policy's and the update's")
    parser.add_argument("--iterations", type=int, default=3, help="timed meta-iterations per row (median)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing useful")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "gpu_physics")
    args = parser.parse_args(argv)
    worlds, steps, repeats = (8, 10, 1) if args.quick else (800, 200, 3)
    if args.child:
        child(*args.child, args.iterations, args.quick)
        return 0
    if args.throughput_child:
        print("RESULT " + json.dumps(throughput(worlds, steps, repeats)))
        return 0
    if args.iterations < 1:
        parser.error(f"--iterations must be >= 1, got {args.iterations}")
    import jax
    import torch

    if args.device == "cuda" and not (torch.cuda.is_available() and jax.default_backend() == "gpu"):
        parser.error(f"--device cuda needs a CUDA GPU seen by torch ({torch.cuda.is_available()}) and by JAX "
                     f"(backend {jax.default_backend()!r}: pip install \"jax[cuda12]\"); or use --device cpu")
    from metarl.common.files import write_report

    runs = []
    for algo in args.algos:
        for physics in ("mujoco", "mjx"):
            print(f"{algo}, physics {physics} ...", flush=True)
            runs.append(_run(["--child", algo, physics, args.device, "--iterations", str(args.iterations),
                              *(["--quick"] if args.quick else [])]))
            r = runs[-1]
            print(f"   iteration {r['iteration_s']:.2f} s (sampling {r['sampling_s']:.2f}, inner "
                  f"{r['adaptation_s']:.2f}, update {r['update_s']:.2f}); first {r['warm_up_s']:.1f} s", flush=True)
    print("throughput ...", flush=True)
    speed = _run(["--throughput-child", *(["--quick"] if args.quick else [])])
    given = sys.argv[1:] if argv is None else argv
    kept = [a for i, a in enumerate(given) if a != "--out" and (i == 0 or given[i - 1] != "--out")]
    result = {"runs": runs, "throughput": speed, "iterations": args.iterations,
              "protocol": ("tiny (--quick)" if args.quick else "cheetah-dir preset, 40 tasks x 20 episodes x 200 "
                           "steps, frame skip 1, float32") + f", policy on {args.device}, task_chunk = meta-batch",
              "command": " ".join(["python", "benchmarks/gpu_physics.py", *kept]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": machine(jax=jax.__version__)}
    write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
