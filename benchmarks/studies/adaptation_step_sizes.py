"""Held-out return after one adaptation step, by the size of that step, from a run's checkpoint.

The protocol fixes the first step at 0.1 in training and evaluation. If a meta-trained policy does better after one
step of another size, its step is mis-scaled: too short to turn the policy, or so long that it overshoots. Also
reported: the mean squared norm of the head's input (the last hidden layer's output) over the visited states. A
head-only (ANIL) step changes the mean action by about step size x that norm x the advantage-weighted gradient, so
features that grow during meta-training make a fixed step size ever longer. And the step's reliability: the
cosine between the inner-step gradients of independent batches of episodes on the same task (1 = the batch does
not matter, 0 = the step's direction is all sampling noise), averaged over the pairs of four batches.
Same held-out tasks, episodes and noise as `metarl eval` (the run's eval_seed): only the step size differs.
`--adapt head` or `all` steps on other parameters than the run's algorithm does (a MAML checkpoint adapted like
ANIL, or the reverse), to tell what the meta-trained parameters give from what the step is allowed to change.
Writes OUT.json and OUT.md.

    python benchmarks/studies/adaptation_step_sizes.py --runs benchmarks/results/grid/runs/cheetah-dir-anil-seed0
    python benchmarks/studies/adaptation_step_sizes.py --runs RUN --lrs 0.05 0.1 --tasks 4 --episodes 2 --out /tmp/x
    python benchmarks/studies/adaptation_step_sizes.py --runs RUN/checkpoints/iteration-0000{50,100}.pt --lrs 0.1
    python benchmarks/studies/adaptation_step_sizes.py --runs MAML_RUN --lrs 0.1 --adapt head --out /tmp/maml-as-anil
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metarl.algorithm.policy import adapted_keys
from metarl.common.files import write_report
from metarl.runs import KEPT_CHECKPOINTS_DIR, load_trainer
from metarl.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
LRS = (0.025, 0.05, 0.1, 0.2, 0.4)
AGREEMENT_SEEDS = (1, 2, 3, 4)  # env and noise seeds of the batches whose inner gradients are compared
ADAPT = {"run": None, "head": "anil", "all": "maml"}  # --adapt: whose inner-loop parameters the step changes


def head_input_sq_norm(trainer: Trainer, tasks: int, episodes: int) -> float:
    """Mean over visited states of ||body(obs)||^2, on held-out tasks with the meta-parameters (before adapting)."""
    cfg = trainer.cfg
    rng = np.random.default_rng(cfg.eval_seed)
    task_list = trainer.sample_tasks(tasks, rng)
    seed = int(rng.integers(0, 2**31 - 1 - tasks * episodes))  # the seed evaluate() draws for step 0
    episodes, _ = trainer.collect(trainer.meta_parameters(), task_list, seed,
                                  torch.Generator().manual_seed(cfg.eval_seed), episodes)
    with torch.no_grad():
        sq = trainer.policy.body(episodes.observations).pow(2).sum(-1)  # [tasks, T, episodes]
    return float((sq * episodes.mask).sum() / episodes.mask.sum())


def gradient_agreement(trainer: Trainer, tasks: int, episodes: int, seeds: tuple[int, ...]) -> list[float]:
    """Per held-out task, the mean cosine between the inner-step gradients (on the adapted keys) of pairs of batches.

    Batch i is `episodes` episodes per task sampled with env seed and noise seed `seeds[i]` from the meta-parameters;
    every pair of batches is compared and each task's cosines are averaged (one pair is a noisy estimate).
    """
    from metarl.algorithm.metalearner import inner_loss
    if len(seeds) < 2:
        raise ValueError(f"gradient_agreement needs at least two seeds to compare batches, got {seeds!r}")
    cfg = trainer.cfg
    task_list = trainer.sample_tasks(tasks, np.random.default_rng(cfg.eval_seed))
    params = trainer.meta_parameters()
    grads = []
    for seed in seeds:
        batch = trainer.batch(trainer.collect(params, task_list, seed, torch.Generator().manual_seed(seed),
                                              episodes)[0])
        per_task = {k: params[k].expand(tasks, *params[k].shape).clone().requires_grad_() for k in trainer.keys}
        loss = inner_loss(trainer.policy, {**params, **per_task}, batch).sum()  # task i's loss -> copy i only
        g = torch.autograd.grad(loss, list(per_task.values()))
        grads.append(torch.cat([x.reshape(tasks, -1) for x in g], dim=1))  # (tasks, adapted parameters)
    cosines = [torch.nn.functional.cosine_similarity(grads[i], grads[j], dim=1)
               for i, j in itertools.combinations(range(len(seeds)), 2)]
    return torch.stack(cosines).mean(0).tolist()


def split_run(path: Path) -> tuple[Path, Path | None]:
    """(run directory, checkpoint file or None for its latest) from a run directory or a kept snapshot's path."""
    if path.is_file():
        return (path.parent.parent if path.parent.name == KEPT_CHECKPOINTS_DIR else path.parent), path
    return path, None


def measure(path: Path, lrs, tasks: int | None, episodes: int | None, adapt: str = "run") -> dict:
    trainer = load_trainer(*split_run(path))
    cfg = trainer.cfg
    tasks, episodes = tasks or cfg.eval_tasks, episodes or cfg.eval_episodes_per_task
    try:
        # MAML and ANIL differ only in these keys, so this is the other algorithm's step from the same parameters
        step_algo = ADAPT[adapt] or cfg.algo
        keys = adapted_keys(trainer.policy, step_algo)
        trainer.keys = keys  # the gradient agreement is measured on the keys the step changes
        out = {"env": cfg.env, "algo": cfg.algo, "seed": cfg.seed, "iteration": trainer.iteration,
               "adapt": "head" if step_algo == "anil" else "all",
               "protocol_lr": cfg.eval_first_lr, "tasks": tasks, "episodes": episodes,
               "head_input_sq_norm": head_input_sq_norm(trainer, tasks, episodes),
               "gradient_agreement": float(np.mean(gradient_agreement(trainer, tasks, episodes, AGREEMENT_SEEDS))),
               "lrs": {}}
        for lr in lrs:
            result = trainer.evaluate(num_tasks=tasks, steps=1, episodes_per_task=episodes, per_task=True, keys=keys,
                                      lrs=[lr])
            out["return_step_0"] = result["return_step_0"]  # the same for every lr: same seed, no step yet
            out["lrs"][str(lr)] = {"return_step_1": result["return_step_1"],
                                   "return_step_1_std": result["return_step_1_std"],
                                   "per_task": [t["returns"][1] for t in result["per_task"]]}
    finally:
        trainer.close()
    return out


def _name(path: Path) -> str:
    run_dir, checkpoint = split_run(path)
    name = f"{run_dir.resolve().parent.name}/{run_dir.name}"
    return name if checkpoint is None else f"{name}/{checkpoint.stem}"


def _markdown(r: dict) -> str:
    lrs = r["lrs"]
    lines = [f"`{r['command']}`, {r['date']}: held-out return after one adaptation step of each size from each "
             "run's checkpoint (mean ± std over tasks; the protocol's step is 0.1), the mean squared norm of "
             "the head's input over the visited states before adapting, and the gradient agreement: the mean over "
             "tasks of the cosine between the inner-step gradients of independent batches of the same task "
             f"(all pairs of {len(AGREEMENT_SEEDS)} batches).",
             "", "| run | iteration | step on | tasks x episodes | ‖features‖² | gradient agreement | 0 steps | "
             + " | ".join(f"1 step of {lr}" for lr in lrs) + " |",
             "| --- | --- | --- | --- | --- | --- | --- |" + " --- |" * len(lrs)]
    for name, run in r["runs"].items():
        cells = [f"{run['lrs'][str(lr)]['return_step_1']:.1f} ± {run['lrs'][str(lr)]['return_step_1_std']:.1f}"
                 for lr in lrs]
        lines.append(f"| {name} | {run['iteration']} | {run['adapt']} | {run['tasks']} x {run['episodes']} | "
                     f"{run['head_input_sq_norm']:.3g} | {run['gradient_agreement']:.2f} | "
                     f"{run['return_step_0']:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", type=Path, required=True,
                        help="run directories (config + checkpoint), or kept snapshots "
                        "(RUN/checkpoints/iteration-N.pt)")
    parser.add_argument("--lrs", nargs="+", type=float, default=list(LRS), help=f"step sizes (default {LRS})")
    parser.add_argument("--tasks", type=int, help="held-out tasks (default: the run's eval_tasks)")
    parser.add_argument("--episodes", type=int, help="episodes per task (default: the run's evaluation episodes)")
    parser.add_argument("--adapt", choices=list(ADAPT), default="run",
                        help="parameters the step changes: the run's algorithm's (default), the head (ANIL) or all "
                        "(MAML)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "adaptation_step_sizes",
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    for flag, value in (("--tasks", args.tasks), ("--episodes", args.episodes)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if bad := [lr for lr in args.lrs if not lr > 0]:
        parser.error(f"--lrs must be positive, got {bad}")
    torch.set_num_threads(1)
    result = {"command": " ".join(["python", "benchmarks/studies/adaptation_step_sizes.py", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "lrs": args.lrs, "runs": {}}
    for run_dir in args.runs:
        result["runs"][_name(run_dir)] = run = measure(run_dir, args.lrs, args.tasks, args.episodes, args.adapt)
        print(_name(run_dir), f"iteration {run['iteration']}", f"0 steps {run['return_step_0']:.1f}",
              *(f"lr {lr}: {run['lrs'][str(lr)]['return_step_1']:.1f}" for lr in args.lrs), flush=True)
    write_report(args.out, result, _markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
