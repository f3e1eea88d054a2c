"""The two baselines of the reproduction grid, adapted and evaluated exactly like the meta-trained policies.

    random-init  a freshly initialised policy (the Trainer's own initialisation, seeded by the config's seed)
    pretrained   a stable-baselines3 PPO policy of the same architecture trained on the task mixture (a new random
                 task at every reset), its actor copied into our GaussianMLP: the MAML paper's "pretrained" baseline

This module computes; metarl.experiments.sweep decides what to compute and where the results and PPO models are kept.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

BASELINE_KINDS = ("random-init", "pretrained")
PPO_STEPS = {"cheetah-dir": 1_000_000, "cheetah-vel": 1_000_000, "nav2d": 200_000}
PPO_STEPS_OTHER = 1_000_000
PPO_ENVS = 4
PPO_N_STEPS, PPO_BATCH = 2048, 64  # stable-baselines3's defaults, shrunk only for budgets too small for them
PPO_HYPERPARAMETERS = "stable-baselines3 PPO defaults (lr 3e-4, 10 epochs, clip 0.2, GAE 0.95)"


def default_ppo_steps(env: str) -> int:
    """PPO's budget in env steps for a family (1M for cheetah, 200k for nav2d, 1M for any other)."""
    return PPO_STEPS.get(env, PPO_STEPS_OTHER)


# -- PPO on the task mixture ------------------------------------------------------------------------------------

def task_mixture_env(env_name: str, horizon: int, rng: np.random.Generator, **env_kwargs):
    """A single env of the family that draws a new random task from `rng` at every reset.

    Its observation does not reveal the task, so PPO learns one policy for the whole distribution: the
    "pretrained" baseline of the MAML paper (trained on all tasks, then fine-tuned by policy gradient).
    """
    import gymnasium

    from metarl.envs import make

    class TaskMixture(gymnasium.Wrapper):
        def reset(self, *, seed=None, options=None):
            task = self.env.unwrapped.sample_tasks(rng, 1)[0]
            return self.env.reset(seed=seed, options={**(options or {}), "task": task})

    return TaskMixture(make(env_name, max_episode_steps=horizon, **env_kwargs))


def ppo_policy_kwargs(cfg) -> dict:
    """An SB3 actor with our architecture: hidden ReLU layers of cfg.hidden_sizes, state-independent log-std."""
    import torch

    sizes = list(cfg.hidden_sizes)
    return dict(net_arch=dict(pi=sizes, vf=sizes), activation_fn=torch.nn.ReLU, log_std_init=cfg.init_log_std)


def ppo_model(cfg, seed: int, steps: int, n_envs: int):
    """An untrained SB3 PPO on `n_envs` task-mixture envs (task streams and PPO seeded by `seed`).

    SB3's default hyper-parameters, except that n_steps and batch_size shrink for budgets below one default
    rollout (only tiny smoke tests); gamma is the config's (0.99, SB3's default too).
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from metarl.config import env_kwargs
    from metarl.envs import get_family

    horizon = cfg.horizon or get_family(cfg.env).horizon
    streams = np.random.SeedSequence(seed).spawn(n_envs)
    makers = [lambda s=s: Monitor(task_mixture_env(cfg.env, horizon, np.random.default_rng(s), **env_kwargs(cfg)))
              for s in streams]
    n_steps = max(8, min(PPO_N_STEPS, steps // n_envs))
    batch = min(PPO_BATCH, n_steps * n_envs)
    return PPO("MlpPolicy", DummyVecEnv(makers), n_steps=n_steps, batch_size=batch, gamma=cfg.gamma,
               policy_kwargs=ppo_policy_kwargs(cfg), seed=seed, device="cpu", verbose=0)


def ppo_training_return(model) -> float | None:
    """Mean return of PPO's last training episodes (SB3 keeps the last 100), None before the first one ends."""
    episodes = [info["r"] for info in model.ep_info_buffer]
    return float(np.mean(episodes)) if episodes else None


def ppo_progress(total: int, reports: int = 10):
    """An SB3 callback that prints PPO's progress about `reports` times over `total` env steps: steps done, the mean
    return of the last 100 training episodes and steps/s (a 1M-step run took 7 to 34 minutes here, depending on
    what else was running)."""
    from stable_baselines3.common.callbacks import BaseCallback

    every = max(1, total // reports)

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.start, self.next_report = time.perf_counter(), every

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:  # reports fall on rollout boundaries (n_steps x n_envs env steps)
            if self.num_timesteps < self.next_report:
                return
            self.next_report = (self.num_timesteps // every + 1) * every
            mean = ppo_training_return(self.model)
            recent = "      none" if mean is None else f"{mean:10.2f}"
            rate = self.num_timesteps / max(time.perf_counter() - self.start, 1e-9)
            print(f"PPO env steps {self.num_timesteps:>10,}/{total:,}  training episode return {recent}  "
                  f"{rate:8,.0f} steps/s", flush=True)

    return Progress()


def train_ppo(cfg, seed: int, steps: int, n_envs: int):
    """Train PPO on the task mixture for `steps` env steps; return (model, facts), the facts being what the
    baseline's result records about it (budget, rollout sizes, time, final training return, architecture, config)."""
    import torch

    from metarl.config import config_to_dict

    torch.set_num_threads(1)
    model = ppo_model(cfg, seed, steps, n_envs)
    print(f"== {cfg.env} pretrained seed {seed}: PPO for {steps:,} env steps on {n_envs} envs", flush=True)
    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=ppo_progress(steps))
    facts = {"steps": steps, "n_envs": n_envs, "n_steps": model.n_steps, "batch_size": model.batch_size,
             "timesteps_done": int(model.num_timesteps), "train_s": time.perf_counter() - start,
             "final_train_return": ppo_training_return(model),
             "policy_kwargs": {"net_arch": list(cfg.hidden_sizes), "activation_fn": "ReLU",
                               "log_std_init": cfg.init_log_std},
             "hyperparameters": PPO_HYPERPARAMETERS, "config": config_to_dict(cfg)}
    return model, facts


def load_ppo(path):
    """A PPO model saved by model.save(path) (a .zip), on the CPU."""
    import torch
    from stable_baselines3 import PPO

    torch.set_num_threads(1)
    return PPO.load(path, device="cpu")


# -- PPO actor -> our policy ------------------------------------------------------------------------------------

def ppo_actor_state_dict(sb3_policy, policy) -> dict:
    """Our GaussianMLP's state dict holding an SB3 ActorCriticPolicy's actor weights.

    mlp_extractor.policy_net's linear layers -> body.0, body.2, ...; action_net -> head; log_std -> log_std.
    Raises ValueError naming the mismatch if the two architectures differ (then build PPO with
    ppo_policy_kwargs(cfg), from the same config as the policy).
    """
    from torch import nn

    if getattr(sb3_policy, "use_sde", False) or getattr(sb3_policy, "squash_output", False):
        raise ValueError("the PPO policy uses gSDE or squashed outputs; build it with use_sde=False (the default)")
    theirs = list(sb3_policy.mlp_extractor.policy_net)
    if any(not isinstance(m, (nn.Linear, nn.ReLU)) for m in theirs):
        raise ValueError("the PPO actor has layers other than Linear and ReLU; build it with "
                         "activation_fn=torch.nn.ReLU (see ppo_policy_kwargs)")
    their_linear = [m for m in theirs if isinstance(m, nn.Linear)]
    our_linear = [name for name, m in policy.body.named_children() if isinstance(m, nn.Linear)]
    if len(their_linear) != len(our_linear):
        raise ValueError(f"the PPO actor has {len(their_linear)} hidden layers, the policy {len(our_linear)}; "
                         "build PPO with net_arch pi = the config's hidden_sizes (see ppo_policy_kwargs)")
    pairs = [(f"body.{name}", layer) for name, layer in zip(our_linear, their_linear)]
    pairs.append(("head", sb3_policy.action_net))
    state = {}
    for prefix, layer in pairs:
        state[f"{prefix}.weight"] = layer.weight.detach().clone()
        state[f"{prefix}.bias"] = layer.bias.detach().clone()
    state["log_std"] = sb3_policy.log_std.detach().clone()
    expected = policy.state_dict()
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(f"PPO actor weight for {key} has shape {tuple(value.shape)}, the policy needs "
                             f"{tuple(expected[key].shape)}; build both from the same config (hidden_sizes, env)")
    return state


def ppo_policy_state(model, cfg) -> dict:
    """Our policy's state dict (architecture from cfg) holding the PPO model's actor."""
    from metarl.algorithm.policy import GaussianMLP

    obs_dim = int(np.prod(model.observation_space.shape))
    act_dim = int(np.prod(model.action_space.shape))
    policy = GaussianMLP(obs_dim, act_dim, cfg.hidden_sizes, cfg.init_log_std)
    return ppo_actor_state_dict(model.policy, policy)


def save_actor(state: dict, path) -> None:
    """Keep a PPO actor as our policy's state dict (about a sixth of SB3's .zip, which also holds the critic and
    Adam's moments): all the baseline's adaptation and evaluation need, written atomically."""
    import torch

    from metarl.common.files import replaced_atomically

    with replaced_atomically(Path(path)) as tmp:
        torch.save({name: value.contiguous() for name, value in state.items()}, tmp)


def load_actor(path) -> dict:
    """The policy state dict written by save_actor."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# -- adaptation on the held-out tasks -----------------------------------------------------------------------------

def adapt_and_evaluate(cfg, policy_state: dict | None, tasks: int, steps: int) -> tuple[dict, int]:
    """Returns after 0..`steps` adaptation steps on the held-out tasks, as the meta-trained policies are evaluated.

    A Trainer built from `cfg` (its seed initialises the policy) evaluates either that fresh policy
    (policy_state None: the random-init baseline) or the given weights. Returns (returns dict, horizon).
    """
    from metarl.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        if policy_state is not None:
            trainer.policy.load_state_dict(policy_state)
        returns = trainer.evaluate(num_tasks=tasks, steps=steps, episodes_per_task=cfg.eval_episodes_per_task)
        return returns, trainer.horizon
    finally:
        trainer.close()
