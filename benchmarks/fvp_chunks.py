"""Cost of the TRPO update's Fisher-vector products against `task_chunk`, measured side by side in one process.

At the sizes of a TRPO preset (default cheetah-dir-paper: 40 tasks x 20 episodes x 200 steps, HalfCheetah's observation
and action sizes, the 100-100 policy), for MAML and ANIL, one inner step: seconds to build the meta-gradient and
the Fisher's graphs (`meta_gradient_and_fvp`) and seconds per Fisher-vector product, for each chunk size, each
timed in turn in this process; and the largest difference of the products from the whole-batch one (float rounding).
The products run at the config's `fvp_precision` as the trainer resolves it (bfloat16 on a CPU with bfloat16 units for
the preset's `auto`), or at `--precision`. The episodes are random numbers: the cost depends on the shapes only.
Results: benchmarks/results/speed/fvp_chunks.{json,md}

    python benchmarks/fvp_chunks.py                  # cheetah-dir, chunks 40 (whole batch), 4, 2, 1
    python benchmarks/fvp_chunks.py --quick          # tiny sizes, a smoke test of the script
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from metarl.envs import get_family, make

from metarl.algorithm.metalearner import (
    Batch,
    MetaBatch,
    adapted_values,
    meta_gradient_and_fvp,
)
from metarl.algorithm.policy import GaussianMLP, adapted_keys, forward, log_prob
from metarl.common.files import write_report
from metarl.common.provenance import machine, machine_line
from metarl.config import load_config
from metarl.sampling.sampler import Episodes
from metarl.trainer import resolve_fvp_precision

REPO = Path(__file__).resolve().parent.parent


def random_meta_batch(policy: GaussianMLP, keys: list[str], lr: float, shape: tuple[int, int, int],
                      obs_dim: int, act_dim: int, gen: torch.Generator) -> MetaBatch:
    """An inner and a post-adaptation batch of random episodes, the old policy being the adapted current one."""
    def batch() -> Batch:
        k, t, n = shape
        obs = torch.randn(k, t, n, obs_dim, generator=gen)
        actions = torch.randn(k, t, n, act_dim, generator=gen)
        mask = torch.ones(k, t, n)
        return Batch(Episodes(obs, actions, torch.randn(k, t, n, generator=gen), mask),
                     torch.randn(k, t, n, generator=gen))

    inner, post = batch(), batch()
    params = {k: p.detach().requires_grad_(True) for k, p in policy.named_parameters()}
    adapted = adapted_values(policy, params, [inner], keys, [lr])
    with torch.no_grad():
        mean, log_std = forward(policy, adapted, post.episodes.observations)
        old = log_prob(mean, log_std, post.episodes.actions)
    return MetaBatch([inner], post, mean, log_std, old)


def measure(policy: GaussianMLP, meta: MetaBatch, keys: list[str], lr: float, chunk: int, products: int,
            v: torch.Tensor, precision: str = "float32") -> tuple[dict, torch.Tensor]:
    """Setup seconds, median seconds per product over `products` products, and the last product."""
    params = {k: p.detach().requires_grad_(True) for k, p in policy.named_parameters()}
    t0 = time.perf_counter()
    _, _, fvp = meta_gradient_and_fvp(policy, params, meta, keys, [lr], first_order=False, task_chunk=chunk,
                                      fvp_precision=precision)
    setup = time.perf_counter() - t0
    times = []
    for _ in range(products):
        t0 = time.perf_counter()
        out = fvp(v)
        times.append(time.perf_counter() - t0)
    return {"setup_s": setup, "fvp_s": statistics.median(times)}, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cheetah-dir-paper", help="TRPO config whose sizes are used (configs/NAME.yaml)")
    parser.add_argument("--algos", nargs="+", default=["maml", "anil"], choices=["maml", "anil"])
    parser.add_argument("--chunks", nargs="+", type=int, default=[40, 4, 2, 1],
                        help="task_chunk values; the first is the reference of the differences and ratios")
    parser.add_argument("--products", type=int, default=3, help="timed products per case (median reported)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the config's update_threads)")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default=None,
                        help="the Fisher products' precision (default: the config's fvp_precision, resolved here)")
    parser.add_argument("--quick", action="store_true", help="4 tasks x 2 episodes x 20 steps, chunks 4 2 1")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "speed" / "fvp_chunks",
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)

    cfg = load_config(REPO / "configs" / f"{args.config}.yaml")
    shape = (cfg.meta_batch_size, cfg.horizon or get_family(cfg.env).horizon, cfg.episodes_per_task)
    chunks = args.chunks
    if args.quick:
        shape, chunks = (4, 20, 2), [4, 2, 1]
    bad = [c for c in chunks if c < 1]
    if bad:
        parser.error(f"--chunks must be >= 1, got {bad}")
    if args.products < 1 or (args.threads is not None and args.threads < 1):
        parser.error(f"--products and --threads must be >= 1, got {args.products} and {args.threads}")
    threads = args.threads or cfg.update_threads
    precision = args.precision or resolve_fvp_precision(cfg.fvp_precision, torch.device("cpu"))
    torch.set_num_threads(threads)
    env = make(cfg.env)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()

    rows = []
    for algo in args.algos:
        gen = torch.Generator().manual_seed(0)
        policy = GaussianMLP(obs_dim, act_dim, cfg.hidden_sizes, cfg.init_log_std, generator=gen)
        keys = adapted_keys(policy, algo)
        meta = random_meta_batch(policy, keys, cfg.inner_lr, shape, obs_dim, act_dim, gen)
        v = torch.randn(sum(p.numel() for p in policy.parameters()), generator=gen)
        reference = None
        for chunk in chunks:
            row, out = measure(policy, meta, keys, cfg.inner_lr, chunk, args.products, v, precision)
            reference = out if reference is None else reference
            row.update(algo=algo, task_chunk=chunk,
                       max_rel_diff=float((out - reference).abs().max() / reference.abs().max()))
            rows.append(row)
            print(f"{algo:5s} task_chunk {chunk:3d}  setup {row['setup_s']:6.2f}s  per product {row['fvp_s']:6.2f}s  "
                  f"max rel. diff {row['max_rel_diff']:.1e}", flush=True)

    command = " ".join(["python", "benchmarks/fvp_chunks.py", *sys.argv[1:]]) if argv is None else "(in-process)"
    result = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M"), "env": cfg.env,
              "tasks_horizon_episodes": list(shape), "threads": threads, "fvp_precision": precision,
              "cg_products_per_update": cfg.cg_iters,
              "machine": machine(),
              "rows": rows}
    k, t, n = shape
    lines = [f"Fisher-vector products by task chunk, `{command}`, {result['date']}, {machine_line(result['machine'])}, "
             f"{threads} torch threads, Fisher products in {precision}. {args.config} sizes: "
             f"{k} tasks x {n} episodes x {t} steps, one inner step. Each TRPO update builds the graphs once (setup, "
             f"which includes the meta-gradient) and runs {cfg.cg_iters} products (the conjugate-gradient iterations; "
             "the step scale reuses them). Speed-up: against the first chunk size, on setup + that many products.", "",
             "| algo | task_chunk | setup (s) | per product (s) | update's share (s) | speed-up | max rel. diff |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for algo in args.algos:
        mine = [r for r in rows if r["algo"] == algo]
        base = mine[0]["setup_s"] + cfg.cg_iters * mine[0]["fvp_s"]
        for r in mine:
            total = r["setup_s"] + cfg.cg_iters * r["fvp_s"]
            lines.append(f"| {algo} | {r['task_chunk']} | {r['setup_s']:.2f} | {r['fvp_s']:.2f} | {total:.1f} | "
                         f"{base / total:.2f}x | {r['max_rel_diff']:.1e} |")
    write_report(args.out, result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
