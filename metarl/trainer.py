"""The Python API the CLI wraps: build a meta-trainer from a Config, run iterations, evaluate on held-out tasks.

One meta-iteration (Finn et al. 2017, alg. 3): sample a meta-batch of tasks; for each inner step, collect episodes
with the current per-task parameters, fit the baseline and adapt; collect post-adaptation episodes; TRPO-update
the meta-parameters through the adaptation. Every iteration returns a flat dict of metrics; nothing is logged here.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from metarl.advantages import fitted_advantages
from metarl.config import Config, env_kwargs
from metarl.envs import get_family, make
from metarl.metalearner import Batch, MetaBatch, adapted_values, trpo_step
from metarl.policy import GaussianMLP, Params, adapted_keys, forward, log_prob, meta_params, sample_actions
from metarl.sampler import Episodes, Sampler


class Trainer:
    """Meta-trains a Gaussian MLP policy with MAML or ANIL on one task family."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        family = get_family(cfg.env)
        self.horizon = cfg.horizon or family.horizon
        self.env_kwargs = env_kwargs(cfg)
        self.sampler = Sampler(cfg.env, cfg.meta_batch_size, cfg.episodes_per_task, self.horizon,
                               cfg.sampler_threads, self.env_kwargs)
        self._task_env = make(cfg.env, **self.env_kwargs).unwrapped  # only to sample tasks
        # Independent streams for tasks/env seeds, action noise and initialisation, all from cfg.seed.
        tasks_seq, noise_seq, init_seq = np.random.SeedSequence(cfg.seed).spawn(3)
        self.rng = np.random.default_rng(tasks_seq)
        self.noise = torch.Generator().manual_seed(int(noise_seq.generate_state(1)[0]))
        init = torch.Generator().manual_seed(int(init_seq.generate_state(1)[0]))
        self.policy = GaussianMLP(self.sampler.obs_dim, self.sampler.act_dim, cfg.hidden_sizes, cfg.init_log_std,
                                  generator=init)
        self.keys = adapted_keys(self.policy, cfg.algo)
        self.iteration = 0
        self.env_steps = 0
        self._eval_samplers: dict[tuple[int, int], Sampler] = {}

    # -- sampling and adaptation -------------------------------------------------------------------------------
    def _sample(self, sampler: Sampler, params: Params, tasks: list, seed: int, noise: torch.Generator):
        # Explicit thread counts: while the simulator's threads hold the cores, torch gets `torch_threads`
        # (more would oversubscribe a 2-core machine and slow small ops 10-20x); the update gets `update_threads`.
        torch.set_num_threads(self.cfg.torch_threads)
        try:
            return sampler.sample(self._actor(params, noise), tasks, seed)
        finally:
            torch.set_num_threads(self.cfg.update_threads)

    def _actor(self, params: Params, generator: torch.Generator):
        def act(obs: torch.Tensor) -> torch.Tensor:
            mean, log_std = forward(self.policy, params, obs)
            return sample_actions(mean, log_std, generator)
        return act

    def _batch(self, episodes: Episodes) -> Batch:
        cfg = self.cfg
        adv = fitted_advantages(episodes.observations, episodes.rewards, episodes.mask, cfg.gamma, cfg.gae_lambda,
                                reg=cfg.baseline_reg, normalize_advantages=cfg.normalize_advantages)
        return Batch(episodes, adv)

    # -- one meta-iteration ----------------------------------------------------------------------------------
    def step(self) -> dict:
        """Run one meta-iteration; return its metrics."""
        cfg, start = self.cfg, time.perf_counter()
        tasks = self._task_env.sample_tasks(self.rng, cfg.meta_batch_size)
        params = {k: v.detach() for k, v in meta_params(self.policy).items()}
        inner, sample_s, adapt_s, policy_s, env_s, steps = [], 0.0, 0.0, 0.0, 0.0, 0
        for _ in range(cfg.inner_steps + 1):
            t0 = time.perf_counter()
            episodes, timing = self._sample(self.sampler, params, tasks, self._env_seed(), self.noise)
            t1 = time.perf_counter()
            batch = self._batch(episodes)
            sample_s += t1 - t0
            policy_s += timing["policy_s"]
            env_s += timing["env_s"]
            steps += timing["env_steps"]
            if len(inner) == cfg.inner_steps:
                post = batch
                adapt_s += time.perf_counter() - t1
                break
            inner.append(batch)
            params = adapted_values(self.policy, params, [batch], self.keys, [cfg.inner_lr])
            adapt_s += time.perf_counter() - t1
        t2 = time.perf_counter()
        with torch.no_grad():
            mean, log_std = forward(self.policy, params, post.episodes.observations)
            old_log_prob = log_prob(mean, log_std, post.episodes.actions)
        meta = MetaBatch(inner, post, mean, log_std, old_log_prob)
        update = trpo_step(self.policy, meta, self.keys, [cfg.inner_lr] * cfg.inner_steps,
                           first_order=cfg.first_order, max_kl=cfg.max_kl, cg_iters=cfg.cg_iters,
                           cg_damping=cfg.cg_damping, ls_max_steps=cfg.ls_max_steps,
                           ls_backtrack_ratio=cfg.ls_backtrack_ratio, fvp_subsample=cfg.fvp_subsample,
                           task_chunk=cfg.task_chunk)
        update_s = time.perf_counter() - t2
        self.iteration += 1
        self.env_steps += steps
        total = time.perf_counter() - start
        return {
            "iteration": self.iteration,
            "env_steps": self.env_steps,
            "returns/pre_adaptation": float(inner[0].episodes.episode_returns().mean()),
            "returns/post_adaptation": float(post.episodes.episode_returns().mean()),
            **{f"trpo/{k}": v for k, v in update.items()},
            "time/sampling_s": sample_s,
            "time/sampling_policy_s": policy_s,
            "time/sampling_env_s": env_s,
            "time/adaptation_s": adapt_s,
            "time/update_s": update_s,
            "time/iteration_s": total,
            "time/env_steps_per_s": steps / max(sample_s, 1e-9),
        }

    def _env_seed(self) -> int:
        return int(self.rng.integers(0, 2**31 - 1 - self.sampler.env.num_envs))

    # -- held-out evaluation ---------------------------------------------------------------------------------
    def evaluate(self, num_tasks: int | None = None, steps: int | None = None,
                 episodes_per_task: int | None = None, per_task: bool = False) -> dict:
        """Return after 0..steps adaptation steps on held-out tasks, mean and std over tasks.

        Test tasks, env seeds and action noise come from `eval_seed` alone, so evaluation is the same for every
        checkpoint and never disturbs the training streams. Step sizes: eval_first_lr, then eval_later_lr (MAML).
        The 0-step return is the no-inner-loop analogue of the ANIL paper's NIL. With `per_task`, the result also
        holds "per_task": each task's fields and its mean return after each step (a mean hides which tasks fail).
        """
        cfg = self.cfg
        num_tasks = num_tasks or cfg.eval_tasks
        steps = cfg.eval_steps if steps is None else steps
        episodes_per_task = episodes_per_task or cfg.eval_episodes_per_task
        key = (num_tasks, episodes_per_task)
        if key not in self._eval_samplers:
            self._eval_samplers[key] = Sampler(cfg.env, num_tasks, episodes_per_task, self.horizon,
                                               cfg.sampler_threads, self.env_kwargs)
        sampler = self._eval_samplers[key]
        rng = np.random.default_rng(cfg.eval_seed)
        tasks = self._task_env.sample_tasks(rng, num_tasks)
        noise = torch.Generator().manual_seed(cfg.eval_seed)
        params = {k: v.detach() for k, v in meta_params(self.policy).items()}
        result, by_step = {}, []
        for step in range(steps + 1):
            seed = int(rng.integers(0, 2**31 - 1 - sampler.env.num_envs))
            episodes, _ = self._sample(sampler, params, tasks, seed, noise)
            returns = episodes.episode_returns().mean(1)  # [tasks]
            by_step.append(returns.tolist())
            result[f"return_step_{step}"] = float(returns.mean())
            result[f"return_step_{step}_std"] = float(returns.std(unbiased=False))
            if step < steps:
                lr = cfg.eval_first_lr if step == 0 else cfg.eval_later_lr
                params = adapted_values(self.policy, params, [self._batch(episodes)], self.keys, [lr])
        if per_task:
            result["per_task"] = [{"task": _jsonable(dataclasses.asdict(task)),
                                   "returns": [step_returns[i] for step_returns in by_step]}
                                  for i, task in enumerate(tasks)]
        return result

    # -- state for checkpoints ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this trainer is."""
        return {"policy": self.policy.state_dict(), "rng": self.rng.bit_generator.state,
                "noise": self.noise.get_state(), "iteration": self.iteration, "env_steps": self.env_steps}

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy"])
        self.rng.bit_generator.state = state["rng"]
        self.noise.set_state(state["noise"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])

    def close(self) -> None:
        self.sampler.close()
        for sampler in self._eval_samplers.values():
            sampler.close()


def _jsonable(value):
    """A task's fields as JSON values: numpy scalars and arrays become numbers and lists, the unknown a string."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.number)):
        return value.item() if isinstance(value, np.number) else value
    return value if isinstance(value, str) or value is None else repr(value)
