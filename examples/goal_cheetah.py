"""HalfCheetah-Goal-Position: a task family defined outside metarl, as a worked example of the task contract.

Each task is a goal x position in [-5, 5]; reward = -|x - goal| - 0.05 * sum(a^2). Use it by path with
`PYTHONPATH=examples metarl train --env goal_cheetah:GoalCheetahEnv`, or call `register()` for a short name.
"""

from dataclasses import dataclass

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

import metarl.envs


@dataclass(frozen=True)
class GoalTask:
    """Reach the x position `goal` (metres)."""

    goal: float


class GoalCheetahEnv(HalfCheetahEnv):
    """HalfCheetah-Goal-Position: run to a goal x position in [-5, 5]; horizon 200."""

    horizon = 200  # contract 1: steps per episode (also the gymnasium time limit)
    low, high = -5.0, 5.0

    def __init__(self, **kwargs):
        # The observation keeps the x position (18 numbers): the reward depends on it.
        super().__init__(exclude_current_positions_from_observation=False, **kwargs)
        self._task = GoalTask(0.0)

    def sample_tasks(self, rng: np.random.Generator, n: int) -> list[GoalTask]:
        """Contract 2: `n` frozen-dataclass tasks drawn from `rng` only."""
        return [GoalTask(float(g)) for g in rng.uniform(self.low, self.high, size=n)]

    @property
    def task(self) -> GoalTask:
        return self._task

    @task.setter
    def task(self, task) -> None:
        # Contract 5: a bad task raises ValueError naming the family, the value and the allowed range.
        goal = getattr(task, "goal", None)
        if not isinstance(task, GoalTask) or not isinstance(goal, (int, float)) or not self.low <= goal <= self.high:
            raise ValueError(f"goal-cheetah: bad task {task!r}; allowed: GoalTask(goal) with goal in [-5, 5]")
        self._task = task

    def reset(self, *, seed=None, options=None):
        # Contract 3: the task travels in options; reset() without it keeps the current task.
        if options and "task" in options:
            self.task = options["task"]
        obs, info = super().reset(seed=seed)
        return obs, {**info, "task": self._task}

    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        x = float(self.data.qpos[0])
        # Contract 4: info carries the task and every reward term; the terms sum to the reward.
        terms = {"reward_goal": -abs(x - self._task.goal),
                 "reward_ctrl": -0.05 * float(np.sum(np.square(np.asarray(action, dtype=np.float64))))}
        info = {"x_position": x, "task": self._task, **terms}
        return obs, sum(terms.values()), terminated, truncated, info


def register() -> metarl.envs.Family:
    """Register the family as `goal-cheetah` (checks the contract first); one call."""
    return metarl.envs.register_family("goal-cheetah", GoalCheetahEnv,
                                       description="HalfCheetah-Goal-Position: run to a goal x in [-5, 5]")


if __name__ == "__main__":
    register()
    env = metarl.envs.make("goal-cheetah")
    env.reset(seed=0, options={"task": GoalTask(2.0)})
    print(env.step(env.action_space.sample())[1:])
