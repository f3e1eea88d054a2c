"""The task contract every family honours, and a checker that says which part a family breaks.

The contract (what the sampler, the trainer and users rely on):
1. the family is a `gymnasium.Env` subclass with a horizon (steps per episode): the config's `horizon`, else an
   int class attribute `horizon` >= 1, else the time limit (`max_episode_steps`) it is registered with in
   gymnasium (see `metarl.envs.resolve_horizon`); a `horizon` attribute, when present, must be an int >= 1;
2. `env.unwrapped.sample_tasks(rng, n)` returns `n` tasks, frozen dataclasses, that depend only on `rng`;
3. `env.reset(seed=..., options={"task": task})` sets the task, `env.unwrapped.task` reads it, and
   `reset()` without options keeps it;
4. `info` from `step` carries `"task"` and every reward term as `"reward_<name>"`; the terms sum to the reward;
5. a task of the wrong type raises `ValueError`.
"""

from __future__ import annotations

import dataclasses

import gymnasium
import numpy as np


class ContractError(TypeError):
    """A task family breaks the task contract; the message names the part it breaks."""


def check_family(env_cls: type, name: str | None = None, steps: int = 3) -> None:
    """Instantiate `env_cls` and exercise every part of the task contract; raise ContractError on the first break."""
    label = name or getattr(env_cls, "__name__", repr(env_cls))

    def fail(part: str, detail: str) -> ContractError:
        return ContractError(f"task family {label!r} breaks the task contract, part '{part}': {detail}")

    if not (isinstance(env_cls, type) and issubclass(env_cls, gymnasium.Env)):
        raise fail("gymnasium.Env", f"{env_cls!r} is not a subclass of gymnasium.Env")
    # No `horizon` attribute is fine (the config or a gymnasium time limit can give one); a wrong one is not.
    if hasattr(env_cls, "horizon") and not valid_horizon(env_cls.horizon):
        raise fail("horizon", f"class attribute `horizon` must be an int >= 1 (steps per episode), "
                              f"got {env_cls.horizon!r}")
    env = env_cls()
    try:
        _check_tasks(env, fail)
        _check_reset_and_step(env, fail, steps)
    finally:
        env.close()


def valid_horizon(horizon) -> bool:
    """Whether `horizon` is a usable number of steps per episode: an int >= 1 (a bool is not)."""
    return isinstance(horizon, int) and not isinstance(horizon, bool) and horizon >= 1


def _check_tasks(env, fail) -> None:
    if not callable(getattr(env, "sample_tasks", None)):
        raise fail("sample_tasks", "the env has no method sample_tasks(rng: numpy.random.Generator, n: int)")
    tasks = env.sample_tasks(np.random.default_rng(0), 4)
    if not isinstance(tasks, list) or len(tasks) != 4:
        raise fail("sample_tasks", f"sample_tasks(rng, 4) must return a list of 4 tasks, got {tasks!r}")
    for task in tasks:
        params = getattr(type(task), "__dataclass_params__", None)
        if not dataclasses.is_dataclass(task) or not params.frozen:
            raise fail("sample_tasks", f"tasks must be frozen dataclasses, got {task!r}")
    if env.sample_tasks(np.random.default_rng(0), 4) != tasks:
        raise fail("sample_tasks", "two generators with the same seed gave different tasks: sampling must "
                                   "depend only on the rng argument, never on a global RNG")


def _check_reset_and_step(env, fail, steps: int) -> None:
    task = env.sample_tasks(np.random.default_rng(1), 1)[0]
    env.reset(seed=0, options={"task": task})
    if getattr(env, "task", None) != task:
        raise fail("task", f"after reset(options={{'task': {task!r}}}), env.task is {getattr(env, 'task', None)!r}")
    env.reset()
    if env.task != task:
        raise fail("task", f"reset() without options must keep the task {task!r}, but env.task is {env.task!r}")
    env.action_space.seed(0)
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        if info.get("task") != task:
            raise fail("info", f"step's info must carry 'task' = {task!r}, got {info.get('task')!r}")
        terms = {k: v for k, v in info.items() if k.startswith("reward_")}
        if not terms:
            raise fail("info", "step's info must carry every reward term as 'reward_<name>'; found none")
        if not np.isclose(float(reward), sum(float(v) for v in terms.values()), rtol=1e-6, atol=1e-8):
            raise fail("info", f"reward {reward} is not the sum of its terms {terms}")
        if terminated or truncated:
            env.reset()
    try:
        env.reset(options={"task": object()})
    except ValueError:
        pass
    else:
        raise fail("bad task", "reset(options={'task': object()}) must raise ValueError naming the family, "
                               "the bad value and the allowed range")
