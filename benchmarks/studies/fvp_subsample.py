"""Learning curves with Fisher-vector products on all episodes (1.0) vs a subsample (default 0.2), same seeds.

The subsample only changes the conjugate-gradient direction (the gradient and the line search always use the
whole batch); this script shows what that does to learning. nav2d at the paper protocol (20 tasks x 20 episodes
x 100 steps), MAML and ANIL, the same seeds for both settings. Writes benchmarks/results/studies/fvp_subsample.{json,md,png}.

    python benchmarks/studies/fvp_subsample.py                       # 60 iterations, seeds 0 and 1
    python benchmarks/studies/fvp_subsample.py --iterations 5 --seeds 0 --out /tmp/x   # a smoke test
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from metarl.common.files import write_report
from metarl.config import load_config
from metarl.experiments.figures import save_figure
from metarl.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def curve(algo: str, fraction: float, seed: int, iterations: int) -> dict:
    cfg = load_config(REPO / "configs" / "nav2d.yaml",
                      {"algo": algo, "seed": seed, "fvp_subsample": fraction, "update_threads": 1})
    trainer = Trainer(cfg)
    post, update_s = [], []
    for _ in range(iterations):
        m = trainer.step()
        post.append(m["returns/post_adaptation"])
        update_s.append(m["time/update_s"])
    final = trainer.evaluate(num_tasks=20, steps=1)
    trainer.close()
    return {"post_adaptation": post, "update_s_median": statistics.median(update_s), "eval": final}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=60, help="meta-iterations per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (each run for both settings)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.2], help="fvp_subsample values")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "fvp_subsample",
                        help="output path without suffix (.json, .md and .png are written)")
    args = parser.parse_args(argv)
    runs = {}
    for algo in ("anil", "maml"):
        for fraction in args.fractions:
            for seed in args.seeds:
                key = f"{algo}/{fraction}/{seed}"
                runs[key] = curve(algo, fraction, seed, args.iterations)
                r = runs[key]
                print(f"{key}: last-10 post-adaptation {statistics.mean(r['post_adaptation'][-10:]):.2f}, "
                      f"held-out after 1 step {r['eval']['return_step_1']:.2f}, TRPO {r['update_s_median']:.2f}s",
                      flush=True)
    result = {"command": " ".join(["python", "benchmarks/studies/fvp_subsample.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "env": "nav2d",
              "iterations": args.iterations, "seeds": args.seeds, "runs": runs}
    lines = [f"`{result['command']}` ({result['date']}): nav2d, paper protocol, {args.iterations} meta-iterations, "
             f"seeds {args.seeds}; mean over seeds.", "",
             "| algo | fvp_subsample | post-adaptation return, last 10 iterations | held-out return after 1 step "
             "(20 tasks) | TRPO s/iteration |", "| --- | --- | --- | --- | --- |"]
    for algo in ("anil", "maml"):
        for fraction in args.fractions:
            rs = [runs[f"{algo}/{fraction}/{s}"] for s in args.seeds]
            lines.append(f"| {algo} | {fraction} | {statistics.mean(statistics.mean(r['post_adaptation'][-10:]) for r in rs):.2f} "
                         f"| {statistics.mean(r['eval']['return_step_1'] for r in rs):.2f} | "
                         f"{statistics.mean(r['update_s_median'] for r in rs):.2f} |")
    write_report(args.out, result, "\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(runs, args, args.out.with_suffix(".png"))


def plot(runs: dict, args, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, algo in zip(axes, ("anil", "maml")):
        for fraction, color in zip(args.fractions, ("tab:blue", "tab:orange", "tab:green")):
            for i, seed in enumerate(args.seeds):
                ys = runs[f"{algo}/{fraction}/{seed}"]["post_adaptation"]
                ax.plot(range(1, len(ys) + 1), ys, color=color, alpha=0.8,
                        label=f"fvp_subsample={fraction}" if i == 0 else None)
        ax.set_title(f"{algo.upper()} on nav2d (seeds {', '.join(map(str, args.seeds))})")
        ax.set_xlabel("meta-iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("post-adaptation return")
    axes[0].legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


if __name__ == "__main__":
    main()
