"""Why cheetah-dir did not learn with gymnasium's frame skip: the protocol differences, tried side by side.

The full-protocol ANIL run with HalfCheetah-v5's frame skip of 5 (benchmarks/results/history/frame-skip-5/runs/
cheetah-dir-anil-seed0) stayed near its initial return for 500 meta-iterations. The public implementations that
report learning on HalfCheetah-Direction differ from that setup in a few places; each variant below changes one of
them, trained on the same seed at a reduced scale (fewer tasks and episodes per meta-iteration, fewer iterations)
so that all fit in one sitting:
  ours          configs/cheetah-dir.yaml with frame_skip 5 (gymnasium's): the policy acts in env units (clipped
                to [-1, 1]), std 1.0;
  std-0.1       the same with an initial std of 0.1 (init_log_std = log 0.1);
  scaled-10     the policy acts in [-10, 10], the env gets action / 10 (pytorch-maml-rl's cheetah configs,
                `normalization_scale: 10`): initial std 0.1 in env units, and the mean's scale changes with it;
  x-position    the observation also holds the torso's x position (the MAML code's rllab env and
                pytorch-maml-rl observe the torso's centre of mass; gymnasium's HalfCheetah-v5 leaves x out);
  frame-skip-1  one simulator step of 0.01 s per env step, so an episode of 200 steps lasts 2 s, not 10 s: the
                MAML code's rllab MujocoEnv reads its frame skip from the model file and falls back to 1, and
                rllab's half_cheetah.xml sets none (gymnasium's HalfCheetah-v5 uses 5). configs/cheetah-dir.yaml
                has used it since this comparison;
  forward-only  frame skip 1, and every task (training and held out) is direction +1: no meta-learning problem
                left, only learning to run, as a check of the policy-gradient machinery itself.
  x-position-frame-skip-1
                x-position at frame skip 1 (the MAML code's cheetah observes the torso's centre of mass, whose x
                follows the torso's);
  stale-baseline
                frame skip 1, with the MAML code's baseline timing: rllab's `process_samples` predicts with the
                linear baseline before fitting it, task after task, so task k's advantages use the fit on task
                k-1's episodes, and the first task's the fit on all episodes of the previous batch (pooled, as
                the logging call fits it); ours fits each task's own episodes.
  fvp-full      frame skip 1, Fisher-vector products on every episode (fvp_subsample 1.0, as the MAML code's
                TRPO) instead of the first fifth used everywhere else here.
  inner-lr-0.2  fvp-full with an inner step of 0.2 (evaluated with 0.2, then 0.1): twice the MAML paper's step,
                which a head-only step on cheetah-dir falls short of (benchmarks/studies/adaptation_step_sizes.py).
  max-kl-0.008  fvp-full with TRPO's max KL 0.008: about the KL of MAML's steps, which the line search cuts back
                once on cheetah-dir (benchmarks/studies/trpo_step_kl.py), where ANIL's are mostly taken whole at 0.01.
  head-log-std  fvp-full with the inner step on the head and the log-std (the MAML code's policy keeps its std in
                a parameter of its own, which MAML adapts; the ANIL paper's "final layer" may or may not hold it).
Variant families are registered here through the plug-in path (`register_family`), as a user would.
Each run records its post-adaptation training return per iteration and a final held-out evaluation
(0..3 steps). Finished runs are kept in the JSON and skipped when the command is run again. Writes
benchmarks/results/studies/cheetah_protocols.{json,md}.

    python benchmarks/studies/cheetah_protocols.py                   # ANIL, seed 0, 80 iterations, 20 tasks x 10 episodes
    python benchmarks/studies/cheetah_protocols.py --iterations 2 --tasks 2 --episodes 2 --eval-tasks 2 --out /tmp/x
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from gymnasium.spaces import Box
from gymnasium.vector.utils import batch_space
from metarl.envs import CheetahDirTask, HalfCheetahBatch, HalfCheetahDirEnv, register_family
from metarl.envs.half_cheetah import sample_direction_tasks

from metarl.algorithm.advantages import (
    baseline_features,
    discounted_returns,
    fit_linear_baseline,
    gae,
    linear_baseline_values,
    normalize,
)
from metarl.algorithm.metalearner import Batch
from metarl.common.files import write_json, write_text
from metarl.config import load_config
from metarl.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
SCALE = 10.0
SCALED_ENV, XPOS_ENV, FORWARD_ENV = "cheetah-dir-scaled-10", "cheetah-dir-x-position", "cheetah-dir-forward-only"
VARIANTS = {
    "ours": {},
    "std-0.1": {"init_log_std": math.log(0.1)},
    "scaled-10": {"env": SCALED_ENV},
    "x-position": {"env": XPOS_ENV},
    "frame-skip-1": {"frame_skip": 1},
    "forward-only": {"frame_skip": 1, "env": FORWARD_ENV},
    "x-position-frame-skip-1": {"frame_skip": 1, "env": XPOS_ENV},
    "stale-baseline": {"frame_skip": 1},
    "fvp-full": {"frame_skip": 1, "fvp_subsample": 1.0},
    # twice the MAML paper's inner step, in training and evaluation (0.2, then 0.1): a head-only step of 0.1 is too
    # short on cheetah-dir (adaptation_step_sizes.md)
    "inner-lr-0.2": {"frame_skip": 1, "fvp_subsample": 1.0, "inner_lr": 0.2, "eval_first_lr": 0.2,
                     "eval_later_lr": 0.1},
    "max-kl-0.008": {"frame_skip": 1, "fvp_subsample": 1.0, "max_kl": 0.008},
    "head-log-std": {"frame_skip": 1, "fvp_subsample": 1.0},
}


class ScaledHalfCheetahDirEnv(HalfCheetahDirEnv):
    """HalfCheetah-Direction acting in [-10, 10]^6; the simulator gets action / 10 (clipped to [-1, 1])."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.action_space = Box(-SCALE, SCALE, self.action_space.shape, np.float32)

    def step(self, action):
        return super().step(np.clip(np.asarray(action, dtype=np.float64) / SCALE, -1.0, 1.0))


class ScaledHalfCheetahBatch(HalfCheetahBatch):
    """The batched form of ScaledHalfCheetahDirEnv."""

    def __init__(self, num_envs: int, **kwargs):
        super().__init__(HalfCheetahDirEnv, num_envs, **kwargs)
        self.single_action_space = Box(-SCALE, SCALE, self.single_action_space.shape, np.float32)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def step(self, actions):
        return super().step(np.clip(np.asarray(actions, dtype=np.float64) / SCALE, -1.0, 1.0))


class XPositionHalfCheetahDirEnv(HalfCheetahDirEnv):
    """HalfCheetah-Direction observing qpos (x included) and qvel: 18 numbers."""

    def __init__(self, **kwargs):
        super().__init__(exclude_current_positions_from_observation=False, **kwargs)


class XPositionHalfCheetahBatch(HalfCheetahBatch):
    """The batched form of XPositionHalfCheetahDirEnv."""

    def __init__(self, num_envs: int, **kwargs):
        super().__init__(HalfCheetahDirEnv, num_envs, **kwargs)

    def _observation_size(self) -> int:
        return self.model.nq + self.model.nv

    def _observe(self) -> np.ndarray:
        return np.concatenate([self.qpos, self.qvel], axis=1)


class ForwardOnlyHalfCheetahDirEnv(HalfCheetahDirEnv):
    """HalfCheetah-Direction whose task distribution is direction +1 only."""

    @staticmethod
    def _sample(rng: np.random.Generator, n: int) -> list:
        # draw as the family does, so that everything drawn from rng afterwards is the same
        return [CheetahDirTask(1.0)] * len(sample_direction_tasks(rng, n))


class StaleBaselineTrainer(Trainer):
    """A Trainer whose advantages use the MAML code's baseline timing (see the stale-baseline variant)."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._pooled = None  # the fit on every episode of the previous batch; rllab's baseline starts at zero

    def batch(self, episodes) -> Batch:
        cfg = self.cfg
        with torch.no_grad():
            obs, rewards, mask = episodes.observations, episodes.rewards, episodes.mask  # (K, T, N, ...)
            feats = baseline_features(obs, mask)
            returns = discounted_returns(rewards, mask, cfg.gamma)
            own = fit_linear_baseline(feats, returns, mask, reg=cfg.baseline_reg)  # (K, F)
            first = torch.zeros_like(own[0]) if self._pooled is None else self._pooled
            stale = torch.cat([first[None], own[:-1]])  # task k predicts with task k-1's fit
            K, T, N, F = feats.shape
            # all tasks' episodes as one batch of K * N episodes: (T, K * N, ...)
            self._pooled = fit_linear_baseline(feats.transpose(0, 1).reshape(T, K * N, F),
                                               returns.transpose(0, 1).reshape(T, K * N),
                                               mask.transpose(0, 1).reshape(T, K * N), reg=cfg.baseline_reg)
            values = linear_baseline_values(feats, stale).to(rewards.dtype)
            adv = gae(rewards, values, mask, cfg.gamma, cfg.gae_lambda)
            if cfg.normalize_advantages:
                adv = normalize(adv, mask)
        return Batch(episodes, adv)


class HeadAndLogStdTrainer(Trainer):
    """A Trainer whose inner step adapts the log-std as well as the adapted keys of its algorithm."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.keys = [*self.keys, "log_std"] if "log_std" not in self.keys else self.keys


TRAINERS = {"stale-baseline": StaleBaselineTrainer, "head-log-std": HeadAndLogStdTrainer}


def register_variants() -> None:
    register_family(SCALED_ENV, ScaledHalfCheetahDirEnv, batched=lambda n, **kw: ScaledHalfCheetahBatch(n, **kw),
                    description="HalfCheetah-Direction acting in [-10, 10], scaled by 1/10 (pytorch-maml-rl)")
    register_family(XPOS_ENV, XPositionHalfCheetahDirEnv,
                    batched=lambda n, **kw: XPositionHalfCheetahBatch(n, **kw),
                    description="HalfCheetah-Direction observing the torso's x position too")
    register_family(FORWARD_ENV, ForwardOnlyHalfCheetahDirEnv,
                    batched=lambda n, **kw: HalfCheetahBatch(ForwardOnlyHalfCheetahDirEnv, n, **kw),
                    description="HalfCheetah-Direction with every task forwards (+1)")


def run(variant: str, algo: str, seed: int, iterations: int, tasks: int, episodes: int, eval_tasks: int) -> dict:
    overrides = {"algo": algo, "seed": seed, "iterations": iterations, "meta_batch_size": tasks,
                 "episodes_per_task": episodes, "eval_tasks": eval_tasks, "eval_episodes_per_task": episodes,
                 "fvp_subsample": 0.2, "frame_skip": 5, **VARIANTS[variant]}
    trainer = TRAINERS.get(variant, Trainer)(load_config(REPO / "configs" / "cheetah-dir.yaml", overrides))
    start = time.perf_counter()
    pre, post = [], []
    for i in range(iterations):
        m = trainer.step()
        pre.append(m["returns/pre_adaptation"])
        post.append(m["returns/post_adaptation"])
        if (i + 1) % 10 == 0:
            print(f"  {variant} it {i + 1}: pre {pre[-1]:.1f} post {post[-1]:.1f}", flush=True)
    result = trainer.evaluate()
    log_std = trainer.policy.log_std.detach().tolist()
    trainer.close()
    return {"overrides": overrides, "pre_adaptation": pre, "post_adaptation": post, "eval": result,
            "log_std": log_std, "minutes": (time.perf_counter() - start) / 60}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=80, help="meta-iterations per run (default 80)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algos", nargs="+", default=["anil"], choices=["anil", "maml"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--tasks", type=int, default=20, help="tasks per meta-iteration (default 20; protocol 40)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task and step (default 10; "
                        "protocol 20), also in evaluation")
    parser.add_argument("--eval-tasks", type=int, default=20, help="held-out tasks (default 20; protocol 40)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "cheetah_protocols",
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    register_variants()
    path = args.out.with_suffix(".json")
    result = json.loads(path.read_text()) if path.exists() else {}
    scale = {"iterations": args.iterations, "seed": args.seed, "tasks": args.tasks, "episodes": args.episodes,
             "eval_tasks": args.eval_tasks}
    if any(result.get(k) not in (None, v) for k, v in scale.items()):
        raise SystemExit(f"{path} holds runs of another scale ({ {k: result.get(k) for k in scale} }); "
                         f"pass those or another --out")
    # Every command that added runs, in order: together they regenerate the file.
    command = " ".join(["python", "benchmarks/studies/cheetah_protocols.py", *sys.argv[1:]])
    commands = result.get("commands") or ([result["command"]] if "command" in result else [])
    result.pop("command", None)
    result.update({"commands": commands + [command] * (command not in commands), **scale})
    runs = result.setdefault("runs", {})
    for algo in args.algos:
        for variant in args.variants:
            key = f"{algo}/{variant}"
            if key in runs:
                print(f"{key}: done (kept from {path})", flush=True)
                continue
            runs[key] = run(variant, algo, args.seed, args.iterations, args.tasks, args.episodes, args.eval_tasks)
            result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, result)  # after every run: an interrupted sweep resumes
            print(f"{key}: " + _summary(runs[key]), flush=True)
    write_text(args.out.with_suffix(".md"), _markdown(result))
    print(_markdown(result))


def _window(values: list[float], first: bool) -> float:
    n = max(1, len(values) // 10)
    return float(np.mean(values[:n] if first else values[-n:]))


def _summary(r: dict) -> str:
    e = r["eval"]
    return (f"post-adaptation {_window(r['post_adaptation'], True):.1f} -> {_window(r['post_adaptation'], False):.1f}; "
            + "  ".join(f"{s} steps {e[f'return_step_{s}']:.1f}" for s in range(4)) + f"  ({r['minutes']:.1f} min)")


def _markdown(r: dict) -> str:
    commands = "; ".join(f"`{c}`" for c in r["commands"])
    lines = [f"{commands}, {r.get('date', '')}: cheetah-dir, seed {r['seed']}, {r['iterations']} "
             f"meta-iterations of {r['tasks']} tasks x {r['episodes']} episodes x 200 steps (protocol: 40 x 20), "
             "TRPO max KL 0.01 (0.008 in max-kl-0.008), fvp_subsample 0.2 (1.0 in fvp-full and the variants "
             "listed after it in the script), frame skip as in the table. "
             "Training return: mean post-adaptation return of the first and "
             f"last tenth of the iterations. Evaluation: {r['eval_tasks']} held-out tasks x {r['episodes']} "
             "episodes, mean return after 0..3 adaptation steps (step sizes 0.1, then 0.05; 0.2, then 0.1 in "
             "inner-lr-0.2, which also trains with an inner step of 0.2).", "",
             "| algo | variant | frame skip | training return, first -> last tenth | 0 steps | 1 step | 2 steps "
             "| 3 steps | final std (env units) | minutes |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, run_ in r["runs"].items():
        algo, variant = key.split("/")
        e = run_["eval"]
        scale = 1.0 / SCALE if run_["overrides"].get("env") == SCALED_ENV else 1.0
        std = ", ".join(f"{scale * np.exp(v):.2f}" for v in run_["log_std"])
        # runs recorded before the frame_skip key existed used the family's own, 5
        lines.append(f"| {algo} | {variant} | {run_['overrides'].get('frame_skip') or 5} | "
                     f"{_window(run_['post_adaptation'], True):.1f} -> "
                     f"{_window(run_['post_adaptation'], False):.1f} | "
                     + " | ".join(f"{e[f'return_step_{s}']:.1f}" for s in range(4))
                     + f" | {std} | {run_['minutes']:.1f} |")
    lines += ["", "ANIL paper, Table 2 (horizon 200): ANIL 363.2, MAML 170.4; MAML paper result files: -50.7, 293.2, "
              "313.5, 315.7 after 0..3 steps (shared/reference/anil-rl.md)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
