"""Multi-task episode sampler: K tasks x N episodes stepped together in one batched env.

It knows nothing of meta-learning: it takes a function from observations (K, N, obs_dim) to actions (K, N, act_dim)
(one batched policy call per time step across all tasks) and returns time-major episode tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from metarl.envs import make_batched, resolve_horizon

PHYSICS = ("mujoco", "mjx")


@dataclass
class Episodes:
    """A batch of fixed-horizon episodes, time-major with a leading task axis.

    observations (K, T, N, obs_dim), actions (K, T, N, act_dim) as sampled (before clipping to the action space),
    rewards (K, T, N), mask (K, T, N): 1.0 for real steps, 0.0 after an episode terminated. successes (K, N): for
    families whose step reports `info["success"]` (Meta-World), 1.0 where the episode succeeded at any step; else None.
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    mask: torch.Tensor
    successes: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        """Real (unmasked) env steps in the batch."""
        return int(self.mask.sum().item())

    def to(self, device: torch.device | str) -> "Episodes":
        """The same episodes on `device` (the policy's; the simulator's are on the CPU)."""
        return Episodes(*(x.to(device) for x in (self.observations, self.actions, self.rewards, self.mask)),
                        None if self.successes is None else self.successes.to(device))

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, (K, N)."""
        return (self.rewards * self.mask).sum(1)


class Sampler:
    """Collects `episodes_per_task` episodes of `horizon` steps for each task of a batch, all side by side.

    `physics`: 'mujoco' steps the C simulator on the CPU (the episodes are CPU tensors); 'mjx' steps a batch that
    lives on an accelerator (metarl.envs.mjx, `physics_impl` 'jax' or 'warp'; nav2d on torch's `device`), and the
    episodes stay on its device.
    """

    def __init__(self, env: str, num_tasks: int, episodes_per_task: int, horizon: int | None = None,
                 num_threads: int = 1, env_kwargs: dict | None = None, dtype: torch.dtype = torch.float32,
                 physics: str = "mujoco", physics_impl: str = "jax", device: torch.device | str = "cpu"):
        if physics not in PHYSICS:
            raise ValueError(f"physics {physics!r} is not one of {', '.join(PHYSICS)}")
        self.num_tasks, self.episodes_per_task = num_tasks, episodes_per_task
        self.dtype = dtype  # of the episode tensors (the simulator's are float64)
        if physics == "mjx":
            from metarl.envs.mjx import make_device_batched
            self.env = make_device_batched(env, num_tasks * episodes_per_task, impl=physics_impl,
                                           num_threads=num_threads, max_episode_steps=horizon, device=device,
                                           **(env_kwargs or {}))
        else:
            self.env = make_batched(env, num_tasks * episodes_per_task, num_threads=num_threads,
                                    max_episode_steps=horizon, **(env_kwargs or {}))
        # a device batch takes and gives torch tensors on its device; the C simulator numpy arrays on the CPU
        self.device = torch.device(getattr(self.env, "device", "cpu"))
        self._tensors = physics == "mjx"
        self.horizon = resolve_horizon(env, horizon)
        space = self.env.single_action_space
        self.obs_dim = int(np.prod(self.env.single_observation_space.shape))
        self.act_dim = int(np.prod(space.shape))
        self._low = torch.as_tensor(space.low, dtype=dtype, device=self.device)
        self._high = torch.as_tensor(space.high, dtype=dtype, device=self.device)
        # whether an episode can end before the horizon (else the loop never reads `alive` on the host)
        self._terminates = getattr(self.env, "can_terminate", True)

    def sample(self, act, tasks: list, seed: int, steps_of_all=None) -> tuple[Episodes, dict]:
        """Run one batch: `act(obs (K, N, obs_dim)) -> actions (K, N, act_dim)`; returns episodes and timings.

        The batch stops early once every episode has terminated. When other samplers run the rest of the same
        batch (metarl.distributed), `steps_of_all(steps) -> steps` gives the most steps any of them ran, and `act`
        is called (its result unused) for the steps this one skipped: whatever `act` draws per step (the action
        noise) stays aligned with one sampler running the whole batch.
        """
        K, N, T = self.num_tasks, self.episodes_per_task, self.horizon
        if len(tasks) != K:
            raise ValueError(f"sampler was built for {K} tasks, got {len(tasks)}")
        self.env.set_attr("task", [task for task in tasks for _ in range(N)])
        obs_np, _ = self.env.reset(seed=seed)
        dtype, device = self.dtype, self.device
        observations = torch.zeros(K, T, N, self.obs_dim, dtype=dtype, device=device)
        actions = torch.zeros(K, T, N, self.act_dim, dtype=dtype, device=device)
        rewards = torch.zeros(K, T, N, dtype=dtype, device=device)
        mask = torch.zeros(K, T, N, dtype=dtype, device=device)
        alive = torch.ones(K, N, dtype=dtype, device=device)
        successes = None  # set once the env reports success
        policy_s = env_s = 0.0
        ran = 0
        for t in range(T):
            ran = t + 1
            obs = torch.as_tensor(obs_np).to(device, dtype).view(K, N, self.obs_dim)
            start = time.perf_counter()
            with torch.no_grad():
                action = act(obs).to(device)
            policy_s += time.perf_counter() - start
            observations[:, t], actions[:, t], mask[:, t] = obs, action, alive
            clipped = torch.maximum(torch.minimum(action, self._high), self._low).view(K * N, self.act_dim)
            start = time.perf_counter()
            obs_np, reward, terminated, _, info = self.env.step(clipped if self._tensors else clipped.numpy())
            env_s += time.perf_counter() - start
            rewards[:, t] = torch.as_tensor(reward).to(device, dtype).view(K, N) * alive
            if "success" in info:  # success at any (real) step of an episode counts (Meta-World's definition)
                succeeded = (torch.as_tensor(np.asarray(info["success"], dtype=np.float64)).to(device, dtype)
                             .view(K, N) > 0).to(dtype) * alive
                successes = succeeded if successes is None else torch.maximum(successes, succeeded)
            # Steps after an episode terminates are padding: masked out of every loss, fit and return.
            alive = alive * (1.0 - torch.as_tensor(terminated).to(device, dtype).view(K, N))
            if self._terminates and not alive.any():
                break
        if steps_of_all is not None:
            idle = torch.zeros(K, N, self.obs_dim, dtype=dtype, device=device)
            with torch.no_grad():
                for _ in range(ran, steps_of_all(ran)):
                    act(idle)  # the steps another sampler of the batch still ran
        episodes = Episodes(observations, actions, rewards, mask, successes)
        return episodes, {"policy_s": policy_s, "env_s": env_s, "env_steps": episodes.num_steps}

    def close(self) -> None:
        self.env.close()
