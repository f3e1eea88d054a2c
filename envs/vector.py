"""What every natively batched family shares: one task per copy, read and set through get_attr/set_attr."""

from __future__ import annotations

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv


class TaskSlots:
    """Copies that each hold a task: `set_attr("task", tasks)` checks and sets them, one per copy (`num_envs`).

    Subclasses define `_check_task(task) -> task` (raising ValueError for a bad one) and `_tasks_changed()`,
    called after the tasks change, to refresh whatever arrays the step reads from them.
    """

    _tasks: list
    num_envs: int

    def get_attr(self, name: str) -> tuple:
        if name != "task":
            raise AttributeError(f"{type(self).__name__} has only the per-copy attribute 'task', not {name!r}")
        return tuple(self._tasks)

    def set_attr(self, name: str, values) -> None:
        if name != "task":
            raise AttributeError(f"{type(self).__name__} has only the per-copy attribute 'task', not {name!r}")
        values = list(values) if isinstance(values, (list, tuple)) else [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr('task'): got {len(values)} tasks for {self.num_envs} copies")
        self._tasks = [self._check_task(t) for t in values]
        self._tasks_changed()

    def _check_task(self, task):
        raise NotImplementedError

    def _tasks_changed(self) -> None:
        raise NotImplementedError


class TaskVectorEnv(TaskSlots, VectorEnv):
    """A VectorEnv whose copies each hold a task (TaskSlots): the C simulator's batches."""

    metadata = {"autoreset_mode": AutoresetMode.DISABLED}


def copy_seeds(seed, n: int) -> list:
    """Per-copy seeds from reset(seed=...): None, an int s (copy i gets s + i) or a list of n ints/None."""
    if seed is None:
        return [None] * n
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n:
        raise ValueError(f"reset(seed=...): got {len(seeds)} seeds for {n} copies")
    return seeds
