"""How far one inner step moves a trained policy: KL and mean shift between the policy before and after adaptation.

For each published run (default: every run under benchmarks/results/grid/runs), load the final checkpoint, sample
`--tasks` held-out tasks x the protocol's evaluation episodes, take one inner step with the evaluation's first step
size (and larger ones, for scale) and report, per task and averaged: the mean KL(pi_before || pi_after) over the
visited states and the mean |mu_after - mu_before| / sigma. A meta-trained policy that adapts well is one whose
single step changes behaviour a lot (nav2d); a small shift means adaptation cannot change what the policy does.
Writes benchmarks/results/studies/inner_step_size.{json,md}.

    python benchmarks/studies/inner_step_size.py
    python benchmarks/studies/inner_step_size.py --runs benchmarks/results/grid/runs/nav2d-anil-seed0 --tasks 2 --out /tmp/x
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metarl.algorithm.policy import forward, kl_divergence
from metarl.common.files import write_report
from metarl.runs import CHECKPOINT_FILE, load_trainer

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RUNS = REPO / "benchmarks" / "results" / "grid" / "runs"
LRS = (0.1, 0.5, 1.0)


def measure(run_dir: Path, tasks: int, seed: int) -> dict:
    trainer = load_trainer(run_dir)
    cfg, episodes_per_task = trainer.cfg, trainer.cfg.eval_episodes_per_task
    task_list = trainer.sample_tasks(tasks, np.random.default_rng(seed))
    params = trainer.meta_parameters()
    episodes, _ = trainer.collect(params, task_list, seed, torch.Generator().manual_seed(seed), episodes_per_task)
    batch = trainer.batch(episodes)
    before_mean, before_log_std = forward(trainer.policy, params, episodes.observations)
    out = {"env": cfg.env, "algo": cfg.algo, "tasks": [str(t) for t in task_list],
           "return_before": episodes.episode_returns().mean(1).tolist(), "steps": {}}
    mask = episodes.mask
    for lr in LRS:
        adapted = trainer.adapt(params, batch, lr)
        mean, log_std = forward(trainer.policy, adapted, episodes.observations)
        kl = (kl_divergence(before_mean, before_log_std, mean, log_std) * mask).sum((1, 2)) / mask.sum((1, 2))
        shift = ((mean - before_mean).abs() / before_log_std.exp()).mean(-1)
        shift = (shift * mask).sum((1, 2)) / mask.sum((1, 2))
        after, _ = trainer.collect(adapted, task_list, seed + 1, torch.Generator().manual_seed(seed), episodes_per_task)
        out["steps"][str(lr)] = {"kl": kl.tolist(), "mean_shift_in_std": shift.tolist(),
                                 "return_after": after.episode_returns().mean(1).tolist()}
    trainer.close()
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path,
                        default=sorted(p for p in DEFAULT_RUNS.iterdir()
                                       if (p / CHECKPOINT_FILE).is_file()))
    parser.add_argument("--tasks", type=int, default=8, help="tasks per run (default 8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "inner_step_size",
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {"command": " ".join(["python", "benchmarks/studies/inner_step_size.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seed": args.seed, "runs": {}}
    for run_dir in args.runs:
        # a run outside benchmarks/results/grid/runs is named with its folder (runs-frame-skip-5/cheetah-dir-anil-seed0)
        name = run_dir.name if run_dir.resolve().parent == DEFAULT_RUNS else f"{run_dir.parent.name}/{run_dir.name}"
        result["runs"][name] = measure(run_dir, args.tasks, args.seed)
        print(name, _row(result["runs"][name]), flush=True)
    write_report(args.out, result, _markdown(result))
    print(_markdown(result))


def _row(r: dict) -> str:
    cells = [f"{np.mean(r['return_before']):.1f}"]
    for lr in LRS:
        s = r["steps"][str(lr)]
        cells.append(f"{np.mean(s['kl']):.3g} ({np.min(s['kl']):.3g}-{np.max(s['kl']):.3g}) | "
                     f"{np.mean(s['mean_shift_in_std']):.2f} | {np.mean(s['return_after']):.1f}")
    return " | ".join(cells)


def _markdown(r: dict) -> str:
    head = "return before | " + " | ".join(f"KL, step {lr} (min-max over tasks) | mean shift / std, step {lr} | "
                                           f"return after step {lr}" for lr in LRS)
    lines = [f"`{r['command']}`, {r['date']}: one inner step from each run's final checkpoint on "
             f"{len(next(iter(r['runs'].values()))['tasks']) if r['runs'] else 0} tasks (task seed {r['seed']}), "
             "the protocol's evaluation episodes; KL(before || after) and |mean shift| / std averaged over the "
             "visited states and action dimensions; mean return over the tasks before and after the step (fresh "
             "episodes). The protocol's first step size is 0.1.", "",
             f"| run | {head} |", "| --- | --- |" + " --- | --- | --- |" * len(LRS)]
    for name, run in r["runs"].items():
        lines.append(f"| {name} | {_row(run)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
