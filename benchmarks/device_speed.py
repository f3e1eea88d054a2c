"""The meta-iteration with the policy, the inner loop and the TRPO update on a CUDA GPU beside the same on the CPU,
measured side by side in one run on one machine.

For each algorithm and each device (`device: cuda` or `cpu`), in a fresh process (its peak memory is its own): the
full-protocol cheetah-dir-paper preset (40 tasks x 20 episodes x 200 steps, one inner step, TRPO with 10 CG iterations),
one warm-up meta-iteration, then `--iterations` timed ones (median of sampling / inner loop / update / total); then
the update alone on one fixed meta-batch, `--repeats` times from the same parameters, with float32 and with bfloat16
Fisher-vector products, interleaved. The simulator always runs on the CPU (`sampler_threads` of the preset), so the
sampling column shows what a GPU does not change. The CPU rows use the preset's 2 update threads, as on the 2-core
machine the other tables were measured on. Results: benchmarks/results/speed/device_speed.{json,md}.

    python benchmarks/device_speed.py                       # on a machine with a CUDA GPU: cuda and cpu rows
    python benchmarks/device_speed.py --devices cpu --quick --out /tmp/dev   # tiny sizes, a smoke test
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
QUICK = {"meta_batch_size": 4, "episodes_per_task": 2, "horizon": 20, "hidden_sizes": [8], "cg_iters": 2,
         "sampler_threads": 1, "update_threads": 1}
PARTS = ("sampling_s", "adaptation_s", "update_s", "iteration_s")


def child(algo: str, device: str, iterations: int, repeats: int, quick: bool, overrides: list[str]) -> None:
    """In a fresh process: warm-up, timed meta-iterations, then the update alone (float32 / bfloat16 Fisher
    products interleaved) on one meta-batch; peak host and GPU memory. Printed as JSON."""
    import dataclasses

    import torch

    from metarl.config import load_config, parse_overrides
    from metarl.runs import preset_path
    from metarl.trainer import Trainer

    cfg = load_config(preset_path("cheetah-dir-paper"), {"algo": algo, "device": device, "adaptive_update_threads": False,
                                                   **(QUICK if quick else {}), **parse_overrides(overrides)})
    trainer = Trainer(cfg)
    cuda = trainer.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    trainer.step()  # warm-up: first-call allocations, kernels chosen
    sync()
    steps = [trainer.step() for _ in range(iterations)]
    result = {"algo": algo, "device": device, "iterations": iterations,
              **{part: statistics.median(s[f"time/{part}"] for s in steps) for part in PARTS},
              "env_steps": steps[0]["env_steps"] // (iterations + 1)}
    meta, _ = trainer.sample_meta_batch()
    start = {k: v.clone() for k, v in trainer.policy.state_dict().items()}

    def update(precision: str) -> float:
        trainer.cfg = dataclasses.replace(cfg, fvp_precision=precision)
        trainer.policy.load_state_dict(start)
        sync()
        t0 = time.perf_counter()
        trainer.update(meta)
        sync()
        return time.perf_counter() - t0

    f32, bf16 = [], []
    for _ in range(repeats):
        f32.append(update("float32"))
        bf16.append(update("bfloat16"))
    result.update(update_alone_s=statistics.median(f32), bf16_fvp_update_alone_s=statistics.median(bf16),
                  peak_rss_mb=int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024,
                  peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                  gpu=torch.cuda.get_device_name() if cuda else None)
    trainer.close()
    print("RESULT " + json.dumps(result))


def measure(algo: str, device: str, iterations: int, repeats: int, quick: bool, overrides: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--child", algo, device, "--iterations", str(iterations),
           "--repeats", str(repeats)] + (["--quick"] if quick else []) + (["--set", *overrides] if overrides else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{algo} on {device} failed:\n{out.stderr[-3000:]}")
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def command(argv: list[str]) -> str:
    """The command line that reproduces the table (where its files were written aside)."""
    kept = [a for i, a in enumerate(argv) if a != "--out" and (i == 0 or argv[i - 1] != "--out")]
    return " ".join(["python", "benchmarks/device_speed.py", *kept])


def markdown(result: dict) -> str:
    from metarl.common.provenance import machine_line
    m = result["machine"]
    rows = ["| algorithm | device | meta-iteration (s) | sampling / inner loop / update (s) | update alone (s) | "
            "with bfloat16 Fisher products (s) | update vs. this machine's CPU | peak host memory (MB) | "
            "peak GPU memory (MB) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        cpu = next((c for c in result["runs"] if c["algo"] == r["algo"] and c["device"] == "cpu"), None)
        ratio = ("1.0x" if r is cpu else f"{cpu['update_alone_s'] / r['update_alone_s']:.1f}x faster") if cpu else "-"
        gpu = f"{r['peak_gpu_mb']:.0f}" if r["peak_gpu_mb"] is not None else "-"
        rows.append(f"| {r['algo'].upper()} | {r['device']} | {r['iteration_s']:.2f} | {r['sampling_s']:.2f} / "
                    f"{r['adaptation_s']:.2f} / {r['update_s']:.2f} | {r['update_alone_s']:.3f} | "
                    f"{r['bf16_fvp_update_alone_s']:.3f} | {ratio} | {r['peak_rss_mb']:.0f} | {gpu} |")
    gpus = sorted({r["gpu"] for r in result["runs"] if r["gpu"]})
    cpu_rows = (f", the CPU rows' update on {result['update_threads']} threads"
                if any(r["device"] == "cpu" for r in result["runs"]) else "")
    rows += ["", f"Measured by `{result['command']}` on {result['date']}: {result['protocol']}; median of "
             f"{result['iterations']} meta-iterations after a warm-up, and of {result['repeats']} updates alone on "
             f"one meta-batch (float32 and bfloat16 Fisher products interleaved); each row a fresh process. "
             f"Machine: {', '.join(gpus) or 'no GPU'}, {machine_line(m)} (the simulator on "
             f"{result['sampler_threads']} CPUs{cpu_rows}), Python {m['python']}."]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    from metarl.common.provenance import machine
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("ALGO", "DEVICE"), help=argparse.SUPPRESS)
    parser.add_argument("--algos", nargs="+", default=["anil", "maml"], choices=["anil", "maml"])
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"], choices=["cuda", "cpu"])
    parser.add_argument("--iterations", type=int, default=2, help="timed meta-iterations per row (median)")
    parser.add_argument("--repeats", type=int, default=3, help="updates alone per precision (median)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing useful")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides of every row (e.g. task_chunk=40: the whole meta-batch in one chunk)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "device_speed")
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child, args.iterations, args.repeats, args.quick, args.set)
        return 0
    for n, name in ((args.iterations, "--iterations"), (args.repeats, "--repeats")):
        if n < 1:
            parser.error(f"{name} must be >= 1, got {n}")
    import torch

    if "cuda" in args.devices and not torch.cuda.is_available():
        parser.error("--devices cuda needs a CUDA GPU, and torch sees none here; use --devices cpu")
    from metarl.common.files import write_report
    from metarl.config import load_config, parse_overrides
    from metarl.runs import preset_path

    runs = []
    for algo in args.algos:
        for device in args.devices:
            print(f"{algo} on {device} ...", flush=True)
            runs.append(measure(algo, device, args.iterations, args.repeats, args.quick, args.set))
            r = runs[-1]
            print(f"   iteration {r['iteration_s']:.2f} s (sampling {r['sampling_s']:.2f}, inner "
                  f"{r['adaptation_s']:.2f}, update {r['update_s']:.2f}); update alone {r['update_alone_s']:.3f} s, "
                  f"bf16 Fisher {r['bf16_fvp_update_alone_s']:.3f} s", flush=True)
    preset = load_config(preset_path("cheetah-dir-paper"), {**(QUICK if args.quick else {}), **parse_overrides(args.set)})
    protocol = ("tiny (--quick)" if args.quick
                else "cheetah-dir-paper preset (TRPO), 40 tasks x 20 episodes x 200 steps, frame skip 1, float32")
    protocol += f", task_chunk {preset.task_chunk}" + "".join(f", {o}" for o in args.set if not o.startswith("task_chunk"))
    result = {"runs": runs, "iterations": args.iterations, "repeats": args.repeats, "protocol": protocol,
              "sampler_threads": preset.sampler_threads, "update_threads": preset.update_threads,
              "command": command(sys.argv[1:] if argv is None else argv),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": machine()}
    write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
