"""What every built-in single env shares: a task set by `reset(options={"task": ...})` and kept by a plain reset."""

from __future__ import annotations

import numpy as np


def check_count(n) -> int:
    """`n` as an int if it is a valid number of tasks to sample (a non-negative int), else ValueError."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample_tasks: n must be a non-negative int, got {n!r}")
    return int(n)


class TaskEnv:
    """Mixin for a gymnasium env whose task is data: a family sets the four class attributes below.

    `_default_task` is the task before any is set; `_check(task)` returns a valid task or raises ValueError naming
    the family, the bad value and the allowed range; `_sample(rng, n)` draws n tasks from `rng` only; `_value(task)`
    is the number (or array) the family's formulas read. Each formula works on scalars and arrays, so a family's
    batched form shares them.
    """

    _default_task = None
    _check = None
    _sample = None
    _value = None
    _task = None

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list:
        """`n` tasks drawn from this family's distribution using only `rng`."""
        return self._sample(rng, n)

    @property
    def task(self):
        return self._task if self._task is not None else self._default_task

    @task.setter
    def task(self, task) -> None:
        self._task = self._check(task)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        # The task travels in options; reset() without it keeps the current task (vector autoreset relies on this).
        if options and "task" in options:
            self.task = options["task"]
        obs, info = super().reset(seed=seed, options=options)
        info["task"] = self.task
        return obs, info

    def step(self, action):
        """The wrapped env's step on the action clipped to the action space, as rllab and the MAML code do: MuJoCo
        clamps the control for the physics anyway (ctrllimited), but the costs would otherwise charge the unclipped
        action. A wrongly shaped action goes through unclipped, to the env's own shape error."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape == self.action_space.shape:
            action = np.clip(action, self.action_space.low, self.action_space.high)
        obs, reward, terminated, truncated, info = super().step(action)
        info["task"] = self.task
        return obs, reward, terminated, truncated, info


def checked_task(task, task_type: type, family: str, field: str, valid, allowed: str):
    """`task` if it is a `task_type` whose `field` passes `valid`, else a ValueError naming the family, the bad
    value and what is `allowed` (the task contract's error for a bad task)."""
    if not isinstance(task, task_type):
        raise ValueError(f"{family}: expected a {task_type.__name__}, got {task!r} ({type(task).__name__})")
    value = getattr(task, field)
    try:
        ok = bool(valid(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{family}: {field} {value!r} is out of range; allowed: {allowed}")
    return task


def is_number_in(low: float, high: float):
    """A check that a value is a real number (not a bool) in [low, high]."""
    return lambda v: (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                      and bool(np.isfinite(v)) and low <= v <= high)


def is_direction(value) -> bool:
    """Whether a value is -1 or +1 (a direction along x)."""
    return value in (-1.0, 1.0) and not isinstance(value, bool)
