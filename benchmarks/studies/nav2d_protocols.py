"""Why nav2d's returns after 2 and 3 steps trail the MAML paper's result files: the action convention and step sizes.

The MAML code's 2D-Navigation (cbfinn/maml_rl, maml_examples/maml_trpo_point.py and test_maml_point.py) differs
from the protocol the ANIL paper's peers use, and metarl's configs/nav2d.yaml follows, in two ways:
  - its env is wrapped in rllab's `normalize`, so the policy acts in [-1, 1]^2 and the env moves by 0.1 * action:
    the initial std of 1.0 is 0.1 in env units, where ours (acting in env units, clipped to 0.1) is 10x the range;
  - its inner step size is 0.5 in training and at test (0.5 then 0.25), not 0.1 (0.1 then 0.05).
This script trains the same seed under three variants side by side, ANIL and MAML, and evaluates each on the
protocol's held-out tasks (40 tasks x 40 episodes, 0..3 steps):
  ours          configs/nav2d.yaml as is;
  unit-actions  the policy acts in [-1, 1]^2, scaled by 0.1 (the family is registered here, through the plug-in
                path, as `nav2d-unit-actions`), step sizes as ours;
  maml-code     unit actions and the MAML code's step sizes (0.5; evaluation 0.5 then 0.25).
Finished runs are kept in the JSON and skipped when the command is run again. Writes
benchmarks/results/studies/nav2d_protocols.{json,md}.

    python benchmarks/studies/nav2d_protocols.py                  # 100 iterations (as maml_trpo_point.py), seed 0
    python benchmarks/studies/nav2d_protocols.py --iterations 2 --eval-tasks 4 --out /tmp/x   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from gymnasium.spaces import Box
from gymnasium.vector.utils import batch_space
from metarl.envs import Navigation2DBatch, Navigation2DEnv, register_family
from metarl.envs.navigation import MAX_ACTION

from metarl.common.files import write_json, write_text
from metarl.config import load_config
from metarl.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
UNIT_ENV = "nav2d-unit-actions"
VARIANTS = {
    "ours": {},
    "unit-actions": {"env": UNIT_ENV},
    "maml-code": {"env": UNIT_ENV, "inner_lr": 0.5, "eval_first_lr": 0.5, "eval_later_lr": 0.25},
}


def to_displacement(action) -> np.ndarray:
    """rllab's `normalize` for this env: an action in [-1, 1] (clipped) moves the point by 0.1 times it."""
    return MAX_ACTION * np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)


class UnitActionNavigation2DEnv(Navigation2DEnv):
    """2D-Navigation acting in [-1, 1]^2, moved by 0.1 * action: rllab's `normalize` around the MAML code's env."""

    def __init__(self):
        super().__init__()
        self.action_space = Box(-1.0, 1.0, (2,), np.float32)

    def step(self, action):
        return super().step(to_displacement(action))


class UnitActionNavigation2DBatch(Navigation2DBatch):
    """The batched form of UnitActionNavigation2DEnv."""

    def __init__(self, num_envs: int, **kwargs):
        super().__init__(num_envs, **kwargs)
        self.single_action_space = Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def step(self, actions):
        return super().step(to_displacement(actions))


def run(variant: str, algo: str, seed: int, iterations: int, eval_tasks: int) -> dict:
    overrides = {"algo": algo, "seed": seed, "iterations": iterations, "fvp_subsample": 0.2, "update_threads": 1,
                 "eval_tasks": eval_tasks, **VARIANTS[variant]}
    trainer = Trainer(load_config(REPO / "configs" / "nav2d.yaml", overrides))
    start = time.perf_counter()
    for _ in range(iterations):
        trainer.step()
    result = trainer.evaluate()
    log_std = trainer.policy.log_std.detach().tolist()
    trainer.close()
    return {"overrides": overrides, "eval": result, "log_std": log_std, "minutes": (time.perf_counter() - start) / 60}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=100, help="meta-iterations per run (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algos", nargs="+", default=["anil", "maml"], choices=["anil", "maml"])
    parser.add_argument("--eval-tasks", type=int, default=40, help="held-out tasks (default 40, the protocol)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "studies" / "nav2d_protocols",
                        help="output path without suffix (.json and .md are written)")
    args = parser.parse_args(argv)
    register_family(UNIT_ENV, UnitActionNavigation2DEnv, batched=lambda n, **kw: UnitActionNavigation2DBatch(n, **kw),
                    description="2D-Navigation with actions in [-1, 1]^2 scaled by 0.1 (the MAML code's convention)")
    path = args.out.with_suffix(".json")
    result = json.loads(path.read_text()) if path.exists() else {}
    if result.get("iterations") not in (None, args.iterations) or result.get("seed") not in (None, args.seed):
        raise SystemExit(f"{path} holds runs of {result['iterations']} iterations, seed {result['seed']}; "
                         f"pass those or another --out")
    result.update({"command": " ".join(["python", "benchmarks/studies/nav2d_protocols.py", *sys.argv[1:]]),
                   "iterations": args.iterations, "seed": args.seed})
    runs = result.setdefault("runs", {})
    for algo in args.algos:
        for variant in VARIANTS:
            key = f"{algo}/{variant}"
            if key in runs:
                print(f"{key}: done (kept from {path})", flush=True)
                continue
            runs[key] = run(variant, algo, args.seed, args.iterations, args.eval_tasks)
            result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, result)  # after every run: an interrupted sweep resumes
            e = runs[key]["eval"]
            print(f"{key}: " + "  ".join(f"{s} steps {e[f'return_step_{s}']:.2f}" for s in range(4))
                  + f"  ({runs[key]['minutes']:.1f} min)", flush=True)
    write_text(args.out.with_suffix(".md"), _markdown(result))
    print(_markdown(result))


def _markdown(r: dict) -> str:
    lines = [f"`{r['command']}`, {r.get('date', '')}: nav2d, seed {r['seed']}, {r['iterations']} meta-iterations "
             "(20 tasks x 20 episodes x 100 steps, TRPO max KL 0.01, fvp_subsample 0.2); evaluation on the "
             "protocol's held-out tasks, mean return over tasks after 0..3 adaptation steps.", "",
             "| algo | variant | actions | inner lr (train; eval) | 0 steps | 1 step | 2 steps | 3 steps | final std (env units) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, run_ in r["runs"].items():
        algo, variant = key.split("/")
        o, e = run_["overrides"], run_["eval"]
        actions = "[-1, 1] x 0.1" if o.get("env") == UNIT_ENV else "env units, clipped to 0.1"
        lrs = f"{o.get('inner_lr', 0.1)}; {o.get('eval_first_lr', 0.1)} then {o.get('eval_later_lr', 0.05)}"
        scale = MAX_ACTION if o.get("env") == UNIT_ENV else 1.0  # the policy's std in env units
        std = ", ".join(f"{scale * np.exp(v):.3f}" for v in run_["log_std"])
        lines.append(f"| {algo} | {variant} | {actions} | {lrs} | "
                     + " | ".join(f"{e[f'return_step_{s}']:.1f}" for s in range(4)) + f" | {std} |")
    lines += ["", "MAML paper result files (MAML, horizon 100): -40.4, -11.7, -3.3, -3.2 after 0..3 steps "
              "(shared/reference/anil-rl.md)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
