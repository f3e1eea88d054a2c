"""The TRPO meta-update against the machine's floor: its floating-point work, its time, and the machine's rate at
the update's own matrix shapes, side by side in one run.

For each algorithm, in a fresh process (its peak memory is the process's): one full-protocol cheetah-dir meta-batch
(the cheetah-dir-paper preset, whose outer loop is TRPO: 40 tasks x 20 episodes x 200 steps, one inner step), then
the update (`Trainer.update`: meta-gradient, 10 conjugate-gradient Fisher-vector products, line search) timed
`--repeats` times from the same parameters.

Counting: every matrix product the update runs (aten mm, addmm, bmm, baddbmm, forward and backward, as
`torch.utils.flop_counter.FlopCounterMode` counts them: 2 m n k per product) is recorded with its shapes by a
dispatch mode during one more update. Elementwise work (tanh, exp, sums) is not counted: matrix products are the
work the algorithm needs, the rest is memory traffic. The machine's rate: each distinct product shape timed alone
(same threads, warm) in float32 and bfloat16, weighted by how often the update runs it. The fraction is the
update's counted FLOPs per second of its wall time over that float32 rate. Beside it, the same update in a process
that keeps glibc's default allocator (`tune_allocator: false`, metarl/common/allocator.py), one whose Fisher-vector
products run in bfloat16 (`fvp_precision: bfloat16`), and one that takes the inner step's Jacobian products by
autograd's double backward instead of in closed form (metarl/algorithm/inner_jacobian.py; the path before it).

    python benchmarks/update_flops.py      # ANIL and MAML: benchmarks/results/speed/update_flops.{json,md}
    python benchmarks/update_flops.py --quick --out /tmp/flops   # tiny sizes, a smoke test
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUICK = {"meta_batch_size": 4, "episodes_per_task": 2, "horizon": 20}
MM_OPS = ("mm", "addmm", "bmm", "baddbmm")


def record_products():
    """A dispatch mode that counts each matrix product by (op, shapes, dtype)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Products(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in MM_OPS:
                shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
                self.counts[(name, shapes)] += 1
            return func(*args, **(kwargs or {}))

    return Products()


def product_flops(op: str, shapes: tuple) -> int:
    """2 m n k of one product (batched: times the batch), the convention of torch.utils.flop_counter."""
    if op in ("mm", "addmm"):
        (m, k), (_, n) = shapes[-2], shapes[-1]
        return 2 * m * n * k
    (b, m, k), (_, _, n) = shapes[-2], shapes[-1]
    return 2 * b * m * n * k


def time_product(op: str, shapes: tuple, dtype, reps: int) -> float:
    """Seconds of one product of these shapes in `dtype` (operands random, warm, median of `reps`)."""
    import torch

    a, b = (torch.randn(*s).to(dtype) for s in shapes[-2:])
    fn = torch.mm if op in ("mm", "addmm") else torch.bmm
    for _ in range(3):
        fn(a, b)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(a, b)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def child(algo: str, repeats: int, quick: bool, threads: int, allocator: bool, count: bool) -> None:
    """In a fresh process, on one meta-batch: `repeats` rounds of a float32 update and (allocator tuned) one with
    bfloat16 Fisher products and one with autograd's inner-step Jacobian, interleaved, and the float32 peak memory;
    with `count`, the FLOPs and the machine's rates at the update's shapes instead. Printed as JSON."""
    import dataclasses
    import resource
    from unittest import mock

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import metarl.algorithm.metalearner
    from metarl.config import load_config
    from metarl.runs import preset_path
    from metarl.trainer import Trainer

    overrides = {"algo": algo, "update_threads": threads, "adaptive_update_threads": False,
                 "tune_allocator": allocator, **(QUICK if quick else {})}
    cfg = load_config(preset_path("cheetah-dir-paper"), overrides)  # TRPO's update (the default's ProMP has no Fisher)
    trainer = Trainer(cfg)
    meta, _ = trainer.sample_meta_batch()
    start = {k: v.clone() for k, v in trainer.policy.state_dict().items()}

    def update(precision: str = "float32", autograd_jacobian: bool = False) -> float:
        trainer.cfg = dataclasses.replace(cfg, fvp_precision=precision)
        trainer.policy.load_state_dict(start)
        closed_form = (lambda *_: False) if autograd_jacobian else metarl.algorithm.metalearner.supported
        with mock.patch.object(metarl.algorithm.metalearner, "supported", closed_form):
            t0 = time.perf_counter()
            trainer.update(meta)
            return time.perf_counter() - t0

    result = {"algo": algo, "allocator_tuned": allocator, "threads": threads,
              "samples": cfg.meta_batch_size * cfg.episodes_per_task * resolve(cfg)}
    if count:
        with FlopCounterMode(display=False) as counter:
            update()
        recorder = record_products()
        with recorder:
            update()
        torch.set_num_threads(threads)
        reps = 3 if quick else 9
        shapes = [(op, s, n, product_flops(op, s)) for (op, s), n in recorder.counts.items()]
        result.update(flops=counter.get_total_flops(), product_flops=sum(n * f for _, _, n, f in shapes),
                      products=sum(n for *_, n, _ in shapes), distinct_shapes=len(shapes),
                      products_f32_s=sum(n * time_product(op, s, torch.float32, reps) for op, s, n, _ in shapes),
                      products_bf16_s=sum(n * time_product(op, s, torch.bfloat16, reps) for op, s, n, _ in shapes))
    else:
        update()  # warm-up, not timed: the first update of a process pays one-off costs that no setting should carry
        f32, bf16, autograd = [], [], []
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # float32's footprint
        for _ in range(repeats):
            f32.append(update())
            if allocator:
                bf16.append(update("bfloat16"))
                autograd.append(update(autograd_jacobian=True))
        result.update(update_s=f32, bf16_fvp_update_s=bf16, autograd_jacobian_update_s=autograd)
    trainer.close()
    print("RESULT " + json.dumps(result))


def resolve(cfg) -> int:
    from metarl.envs import resolve_horizon

    return resolve_horizon(cfg.env, cfg.horizon)


def measure(algo: str, repeats: int, quick: bool, threads: int, allocator: bool = True, count: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", algo, "--repeats", str(repeats), "--threads", str(threads)]
    cmd += (["--quick"] if quick else []) + ([] if allocator else ["--plain-allocator"]) + (["--count"] if count else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def summarise(algo: str, counted: dict, tuned: list[dict], plain: list[dict]) -> dict:
    """One algorithm's figures: medians over every round's updates (tuned and plain allocator interleaved)."""
    update_s = statistics.median([t for r in tuned for t in r["update_s"]])
    plain_s = statistics.median([t for r in plain for t in r["update_s"]])
    bf16_s = statistics.median([t for r in tuned for t in r["bf16_fvp_update_s"]])
    autograd_s = statistics.median([t for r in tuned for t in r["autograd_jacobian_update_s"]])
    gflop = counted["flops"] / 1e9
    return {**counted, "algo": algo, "update_s": update_s, "plain_allocator_update_s": plain_s,
            "bf16_fvp_update_s": bf16_s, "autograd_jacobian_update_s": autograd_s,
            "closed_form_jacobian_speedup": autograd_s / update_s, "gflop": gflop, "achieved_gflops": gflop / update_s,
            "f32_rate_gflops": counted["product_flops"] / 1e9 / counted["products_f32_s"],
            "bf16_rate_gflops": counted["product_flops"] / 1e9 / counted["products_bf16_s"],
            "fraction_of_f32_rate": counted["products_f32_s"] / update_s,
            "allocator_speedup": plain_s / update_s, "bf16_fvp_speedup": update_s / bf16_s,
            "peak_rss_gb": max(r["peak_rss_gb"] for r in tuned),
            "plain_allocator_peak_rss_gb": max(r["peak_rss_gb"] for r in plain),
            "rounds": {"tuned": tuned, "plain": plain}}


def markdown(result: dict) -> str:
    from metarl.common.provenance import machine_line
    rows = ["| algorithm | update (s) | with glibc's default allocator (s) | with bfloat16 Fisher products (s) | "
            "with autograd's inner-step Jacobian (s) | matrix-product work (GFLOP) | achieved (GFLOP/s) | machine, float32 at these "
            "shapes (GFLOP/s) | fraction of it | machine, bfloat16 (GFLOP/s) | peak memory (GB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        rows.append(f"| {r['algo'].upper()} | {r['update_s']:.2f} | {r['plain_allocator_update_s']:.2f} | "
                    f"{r['bf16_fvp_update_s']:.2f} | {r['autograd_jacobian_update_s']:.2f} | {r['gflop']:.0f} | {r['achieved_gflops']:.0f} | "
                    f"{r['f32_rate_gflops']:.0f} | {r['fraction_of_f32_rate']:.2f} | {r['bf16_rate_gflops']:.0f} | "
                    f"{r['peak_rss_gb']:.2f} |")
    m = result["machine"]
    rows += ["", f"One full-protocol cheetah-dir update ({result['protocol']}), median of {result['rounds']} x "
             f"{result['repeats']} updates per setting (after one untimed warm-up update; interleaved: "
             "the float32, bfloat16-Fisher and autograd-Jacobian updates alternate in one process, processes "
             "with the tuned and the default allocator alternate), "
             f"{result['threads']} torch threads, each algorithm in a fresh process; {machine_line(m)}, "
             f"Python {m['python']}. Command: `{result['command']}`."]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    from metarl.common.provenance import machine
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--algos", nargs="+", default=["anil", "maml"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--plain-allocator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the timing processes")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "update_flops")
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.repeats, args.quick, args.threads, not args.plain_allocator, args.count)
        return 0


    sys.path.insert(0, str(REPO))
    from metarl.common.files import write_report

    runs = []
    for algo in args.algos:
        counted = measure(algo, args.repeats, args.quick, args.threads, count=True)
        tuned, plain = [], []
        for _ in range(args.rounds):  # interleaved, so that a drift of the machine's speed hits both alike
            tuned.append(measure(algo, args.repeats, args.quick, args.threads))
            plain.append(measure(algo, args.repeats, args.quick, args.threads, allocator=False))
        runs.append(summarise(algo, counted, tuned, plain))
        print(f"{algo}: update {runs[-1]['update_s']:.2f} s, {runs[-1]['gflop']:.0f} GFLOP", flush=True)
    protocol = "tiny (--quick)" if args.quick else "40 tasks x 20 episodes x 200 steps, frame skip 1"
    command = "python benchmarks/update_flops.py" + (" --quick" if args.quick else "")
    result = {"runs": runs, "repeats": args.repeats, "rounds": args.rounds, "threads": args.threads, "protocol": protocol,
              "command": command, "machine": machine()}
    write_report(args.out, result, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
