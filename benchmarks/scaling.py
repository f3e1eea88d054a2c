"""Scaling one training out over ranks (torchrun, gloo): measured on this machine, extrapolated by a stated model.

At the full cheetah-dir protocol (40 tasks x 20 episodes x 200 steps), for ANIL and MAML, side by side in one
sitting: the median seconds per meta-iteration (after a warm-up iteration) of one process with 2 threads, one
process with 1 thread, and 2 ranks with 1 thread each (`torchrun --standalone --nproc-per-node 2 -m metarl
train`); the collectives and bytes one rank exchanges per iteration (the dist/ metrics); and the latency of one
gloo all-reduce between the 2 ranks for a 4-byte flag and for the parameter vector.

The model behind the extrapolation to n = 1, 2, 4, 8, 40 ranks (one task per rank at 40), each rank on its own
core of a machine like this one:

    T(n) = W / n + c * t_ar(n, b),     t_ar(n, b) = 2 (n - 1) * alpha + 2 (n - 1) / n * b * beta

W is the one-thread iteration's work (sampling, adaptation and update are sums over tasks), c the collectives per
iteration and b their mean size, and t_ar gloo's ring all-reduce with this machine's loopback latency alpha and
seconds per byte beta, fitted from the two probes. Ranks on other machines replace alpha and beta with their
network's. The model is checked against the measured 2-rank iteration.

    python benchmarks/scaling.py                          # about 10 minutes on 2 cores (run it on an idle machine)
    python benchmarks/scaling.py --algos anil --iterations 1 --set meta_batch_size=4 episodes_per_task=2 \\
        --out /tmp/scaling                                # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RANKS = (1, 2, 4, 8, 40)
MODES = {"1 process x 2 threads": (1, 2), "1 process x 1 thread": (1, 1), "2 ranks x 1 thread": (2, 1)}
QUIET = {"eval_every": 0, "eval_tasks": 1, "eval_episodes_per_task": 1, "eval_steps": 0, "checkpoint_every": 1000,
         "keep_checkpoint_every": 0, "adaptive_update_threads": False}


def torchrun() -> str:
    return shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))


def train(algo: str, ranks: int, threads: int, iterations: int, overrides: dict, folder: Path) -> list[dict]:
    """One fresh cheetah-dir run of `iterations` + 1 iterations; its per-iteration metrics."""
    sets = {**QUIET, "sampler_threads": threads, "update_threads": threads, "torch_threads": 1, **overrides}
    run_dir = folder / f"{algo}-{ranks}x{threads}"
    args = ["train", "--env", "cheetah-dir", "--algo", algo, "--iterations", str(iterations + 1), "--run-dir",
            str(run_dir), "--set", *[f"{k}={json.dumps(v).replace(' ', '')}" for k, v in sets.items()]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = ([sys.executable, "-m", "metarl", *args] if ranks == 1 else
           [torchrun(), "--standalone", "--nproc-per-node", str(ranks), "-m", "metarl", *args])
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m for m in lines if "time/iteration_s" in m]


def probe(folder: Path, size: int, reps: int = 300) -> dict:
    """Seconds per gloo all-reduce between 2 ranks for a 1-float and a `size`-float message (median of reps)."""
    out = folder / "probe.json"
    code = (
        "import json, sys, time, torch, torch.distributed as d\n"
        "d.init_process_group('gloo')\n"
        "res = {}\n"
        f"for n in (1, {size}):\n"
        "    t = torch.zeros(n)\n"
        "    for _ in range(20): d.all_reduce(t)\n"
        "    times = []\n"
        f"    for _ in range({reps}):\n"
        "        d.barrier(); s = time.perf_counter(); d.all_reduce(t); times.append(time.perf_counter() - s)\n"
        "    times.sort(); res[str(n)] = times[len(times) // 2]\n"
        f"if d.get_rank() == 0: open({str(out)!r}, 'w').write(json.dumps(res))\n"
        "d.destroy_process_group()\n")
    script = folder / "probe.py"
    script.write_text(code)
    done = subprocess.run([torchrun(), "--standalone", "--nproc-per-node", "2", str(script)], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"the all-reduce probe failed:\n{done.stderr[-3000:]}")
    res = json.loads(out.read_text())
    return {"small_s": res["1"], "large_s": res[str(size)], "large_bytes": size * 4}


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows[1:])  # the first iteration is the warm-up


def model(work_s: float, collectives: float, mean_bytes: float, alpha: float, beta: float, n: int) -> float:
    ring = 2 * (n - 1) * alpha + 2 * (n - 1) / n * mean_bytes * beta
    return work_s / n + (collectives * ring if n > 1 else 0.0)


def markdown(result: dict) -> str:
    from metarl.common.provenance import machine_line
    p = result["probe"]
    lines = ["| algorithm | " + " | ".join(f"{m} (s)" for m in MODES) + " | 2 ranks over 1 process x 2 threads | "
             "collectives / iteration (one rank) | kB / iteration |",
             "| --- | " + "--- | " * len(MODES) + "--- | --- | --- |"]
    for algo, row in result["algos"].items():
        times = row["iteration_s"]
        lines.append(f"| {algo.upper()} | " + " | ".join(f"{times[m]:.2f}" for m in MODES)
                     + f" | {times['1 process x 2 threads'] / times['2 ranks x 1 thread']:.2f}x | "
                     f"{row['collectives']:.0f} | {row['bytes'] / 1e3:.0f} |")
    lines += ["", f"gloo all-reduce between 2 ranks on this machine: {p['small_s'] * 1e6:.0f} µs for 4 bytes, "
              f"{p['large_s'] * 1e6:.0f} µs for {p['large_bytes'] / 1e3:.0f} kB (the parameter vector); fitted "
              f"alpha = {result['alpha_s'] * 1e6:.1f} µs per hop, beta = {result['beta_s_per_byte'] * 1e9:.2f} "
              "ns per byte.", "",
              "Expected seconds per iteration on n ranks of one thread each (the model in benchmarks/scaling.py; "
              "loopback latency, so a lower bound for ranks on a network):", "",
              "| algorithm | " + " | ".join(f"n = {n}" for n in RANKS) + " | model at n = 2 against measured |",
              "| --- | " + "--- | " * len(RANKS) + "--- |"]
    for algo, row in result["algos"].items():
        lines.append(f"| {algo.upper()} | " + " | ".join(f"{row['model'][str(n)]:.2f}" for n in RANKS)
                     + f" | {row['model']['2']:.2f} / {row['iteration_s']['2 ranks x 1 thread']:.2f} |")
    lines += ["", f"Full cheetah-dir protocol{result['overrides_text']}; median of {result['iterations']} iterations "
              f"after a warm-up; {machine_line(result['machine'])}. Command: `{result['command']}`, {result['date']}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from metarl.common.provenance import machine
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=["anil", "maml"], choices=["anil", "maml"])
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per case (after a warm-up)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides (smoke tests)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "scaling")
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error(f"--iterations must be >= 1, got {args.iterations}")
    from metarl.common.files import write_report
    from metarl.config import parse_overrides

    overrides = parse_overrides(args.set)
    result = {"command": " ".join(["python", "benchmarks/scaling.py", *(sys.argv[1:] if argv is None else argv)]),
              "iterations": args.iterations, "algos": {},
              "overrides_text": f" with {', '.join(args.set)}" if args.set else "",
              "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        params = None
        for algo in args.algos:
            row = {"iteration_s": {}, "sampling_s": {}, "update_s": {}}
            for mode, (ranks, threads) in MODES.items():
                print(f"{algo}: {mode}", flush=True)
                rows = train(algo, ranks, threads, args.iterations, overrides, folder)
                for key in ("iteration_s", "sampling_s", "update_s"):
                    row[key][mode] = median(rows, f"time/{key}")
                if ranks > 1:
                    row["collectives"] = median(rows, "dist/collectives")
                    row["bytes"] = median(rows, "dist/bytes")
            result["algos"][algo] = row
            if params is None:
                import torch
                ckpt = torch.load(folder / f"{algo}-1x1" / "checkpoint.pt", weights_only=True)
                params = sum(t.numel() for t in ckpt["trainer"]["policy"].values())
        print("all-reduce probe", flush=True)
        result["probe"] = probe(folder, params)
    p = result["probe"]
    result["alpha_s"] = p["small_s"] / 2  # a 2-rank ring all-reduce is 2 hops
    result["beta_s_per_byte"] = max(p["large_s"] - p["small_s"], 0.0) / p["large_bytes"]
    for row in result["algos"].values():
        work = row["iteration_s"]["1 process x 1 thread"]
        mean_bytes = row["bytes"] / max(row["collectives"], 1)
        row["model"] = {str(n): model(work, row["collectives"], mean_bytes, result["alpha_s"],
                                      result["beta_s_per_byte"], n) for n in RANKS}
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = markdown(result)
    write_report(args.out, result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
