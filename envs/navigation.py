"""2D-Navigation: a point moves towards a goal on the plane (MAML paper, Finn et al. 2017, sec. 5.3).

Pure numpy; the single env and the batched form share the step formula (`nav_step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium
import numpy as np
from gymnasium.spaces import Box
from gymnasium.utils import seeding
from gymnasium.vector.utils import batch_space
from metarl.envs.vector import TaskVectorEnv

HORIZON = 100
MAX_ACTION = 0.1
GOAL_LOW, GOAL_HIGH = -0.5, 0.5
GOAL_TOLERANCE = 0.01  # the episode ends when |dx| < 0.01 and |dy| < 0.01


@dataclass(frozen=True)
class Nav2DTask:
    """Reach `goal` = (x, y) from the origin."""

    goal: tuple[float, float]


def sample_goal_tasks(rng: np.random.Generator, n: int) -> list[Nav2DTask]:
    """Goals uniform on [-0.5, 0.5]^2 (MAML paper, sec. 5.3)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample_tasks: n must be a non-negative int, got {n!r}")
    goals = rng.uniform(GOAL_LOW, GOAL_HIGH, size=(int(n), 2))
    return [Nav2DTask((float(x), float(y))) for x, y in goals]


def check_goal_task(task) -> Nav2DTask:
    """Return `task` if it is a valid 2D-Navigation task, else raise ValueError."""
    if not isinstance(task, Nav2DTask):
        raise ValueError(f"nav2d: expected a Nav2DTask, got {task!r} ({type(task).__name__})")
    goal = np.asarray(task.goal, dtype=float) if _is_pair(task.goal) else None
    if goal is None or not np.all(np.isfinite(goal)) or np.any(np.abs(goal) > GOAL_HIGH):
        raise ValueError(f"nav2d: goal {task.goal!r} is out of range; allowed: (x, y) with x, y in [-0.5, 0.5]")
    return task


def _is_pair(goal) -> bool:
    return (isinstance(goal, (tuple, list, np.ndarray)) and len(goal) == 2
            and all(isinstance(g, (int, float, np.floating, np.integer)) and not isinstance(g, bool) for g in goal))


def nav_step(state: np.ndarray, action: np.ndarray, goal: np.ndarray):
    """One step for any leading shape: (next_state, reward, terminated).

    next = state + clip(action, -0.1, 0.1); reward = -||next - goal|| (L2, as the MAML code and every
    reimplementation; the paper's text says squared); terminated when |dx| < 0.01 and |dy| < 0.01.
    """
    next_state = state + np.clip(action, -MAX_ACTION, MAX_ACTION)
    delta = next_state - goal
    reward = -np.sqrt(np.sum(np.square(delta), axis=-1))
    terminated = np.all(np.abs(delta) < GOAL_TOLERANCE, axis=-1)
    return next_state, reward, terminated


class Navigation2DEnv(gymnasium.Env):
    """2D-Navigation: move a point from the origin to a goal (MAML paper, sec. 5.3).

    Tasks: `Nav2DTask(goal)`, goal uniform on [-0.5, 0.5]^2.
    Observation: the position (x, y), starting at the origin. Action: a displacement, clipped to [-0.1, 0.1]^2.
    Reward: `-||s' - g||` (L2 distance after the move); `info["reward_dist"]` holds it (the only term).
    Episode end: terminates when |dx| < 0.01 and |dy| < 0.01; time limit 100.
    """

    metadata = {"render_modes": []}
    horizon = HORIZON

    def __init__(self):
        self.observation_space = Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = Box(-MAX_ACTION, MAX_ACTION, (2,), np.float32)
        self._task = Nav2DTask((0.0, 0.0))
        self._goal = np.zeros(2)
        self._state = np.zeros(2)

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list[Nav2DTask]:
        """`n` tasks drawn from this family's distribution using only `rng`."""
        return sample_goal_tasks(rng, n)

    @property
    def task(self) -> Nav2DTask:
        return self._task

    @task.setter
    def task(self, task) -> None:
        self._task = check_goal_task(task)
        self._goal = np.asarray(task.goal, dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.task = options["task"]
        self._state = np.zeros(2)
        return self._state.astype(np.float32), {"task": self._task}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        self._state, reward, terminated = nav_step(self._state, action, self._goal)
        info = {"task": self._task, "reward_dist": float(reward)}
        return self._state.astype(np.float32), float(reward), bool(terminated), False, info


class Navigation2DBatch(TaskVectorEnv):
    """Many 2D-Navigation copies as numpy arrays, different goals side by side.

    Same interface as `HalfCheetahBatch`: `set_attr("task", tasks)`, `reset(seed=...)`, `step(actions)`.
    A copy that has terminated stays where it is (reward 0, terminated True) until the next reset: the
    sampler masks its later steps, and no autoreset happens (`AutoresetMode.DISABLED`).
    """

    def __init__(self, num_envs: int, *, max_episode_steps: int = HORIZON, num_threads: int = 1):
        # num_threads: taken for the common batched interface; numpy steps all copies on this thread anyway.
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.single_observation_space = Box(-np.inf, np.inf, (2,), np.float32)
        self.single_action_space = Box(-MAX_ACTION, MAX_ACTION, (2,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._tasks = [Nav2DTask((0.0, 0.0))] * num_envs
        self._goals = np.zeros((num_envs, 2))
        self._states = np.zeros((num_envs, 2))
        self._done = np.zeros(num_envs, dtype=bool)
        self._t = 0

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list[Nav2DTask]:
        return sample_goal_tasks(rng, n)

    def _check_task(self, task) -> Nav2DTask:
        return check_goal_task(task)

    def _tasks_changed(self) -> None:
        self._goals = np.array([t.goal for t in self._tasks], dtype=np.float64)

    def reset(self, *, seed=None, options: dict | None = None):
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed if np.isscalar(seed) else None)
        if options and "task" in options:
            self.set_attr("task", options["task"])
        self._states = np.zeros((self.num_envs, 2))
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._t = 0
        return self._states.astype(np.float32), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(f"actions must have shape {(self.num_envs, 2)}, got {actions.shape}")
        live = ~self._done
        next_states, rewards, terminated = nav_step(self._states, actions, self._goals)
        self._states = np.where(live[:, None], next_states, self._states)
        rewards = np.where(live, rewards, 0.0)
        self._done |= terminated & live
        self._t += 1
        truncated = np.full(self.num_envs, self._t >= self.max_episode_steps) & ~self._done
        return self._states.astype(np.float32), rewards, self._done.copy(), truncated, {"reward_dist": rewards}
