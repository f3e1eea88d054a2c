"""The task contract every family honours, and a checker that says which part a family breaks.

The contract (what the sampler, the trainer and users rely on):
1. the family is a `gymnasium.Env` subclass that builds with no arguments, with a horizon (steps per episode): the
   config's `horizon`, else an int class attribute `horizon` >= 1, else the time limit (`max_episode_steps`) it is
   registered with in gymnasium (see `metarl.envs.resolve_horizon`); a `horizon` attribute, when present, must be
   an int >= 1;
2. its spaces are those metarl supports: `action_space` a continuous `gymnasium.spaces.Box` (a floating dtype, a
   1-D shape; the policy is Gaussian) and `observation_space` a 1-D `Box`;
3. `env.unwrapped.sample_tasks(rng, n)` returns `n` tasks, frozen dataclasses, that depend only on `rng`;
4. `env.reset(seed=..., options={"task": task})` sets the task, `env.unwrapped.task` reads it, and
   `reset()` without options keeps it;
5. `info` from `step` carries `"task"` and every reward term as `"reward_<name>"`; the terms sum to the reward;
6. a task of the wrong type raises `ValueError`.

`check_family` exercises every part; whatever breaks, or whatever the family's own code raises while it is
exercised, becomes one `ContractError` line naming the family, the part (or the step that raised) and the cause.
"""

from __future__ import annotations

import contextlib
import dataclasses

import gymnasium
import numpy as np
from gymnasium.spaces import Box


class ContractError(TypeError):
    """A task family breaks the task contract; the message names the part it breaks."""


def check_family(env_cls: type, name: str | None = None, steps: int = 3) -> None:
    """Instantiate `env_cls` and exercise every part of the task contract; raise ContractError on the first break."""
    check = _Checker(name or getattr(env_cls, "__name__", repr(env_cls)))
    if not (isinstance(env_cls, type) and issubclass(env_cls, gymnasium.Env)):
        raise check.fail("gymnasium.Env", f"{env_cls!r} is not a subclass of gymnasium.Env")
    # No `horizon` attribute is fine (the config or a gymnasium time limit can give one); a wrong one is not.
    if hasattr(env_cls, "horizon") and not valid_horizon(env_cls.horizon):
        raise check.fail("horizon", f"class attribute `horizon` must be an int >= 1 (steps per episode), "
                                    f"got {env_cls.horizon!r}")
    with check.guard("construction", f"building the env with no arguments, {env_cls.__name__}(),"):
        env = env_cls()
    try:
        _check_spaces(env, check)
        _check_tasks(env, check)
        _check_reset_and_step(env, check, steps)
    except BaseException:
        with contextlib.suppress(Exception):  # the first break is the one to report
            env.close()
        raise
    with check.guard("close", "close()"):
        env.close()


def valid_horizon(horizon) -> bool:
    """Whether `horizon` is a usable number of steps per episode: an int >= 1 (a bool is not)."""
    return isinstance(horizon, int) and not isinstance(horizon, bool) and horizon >= 1


def describe_exception(exc: BaseException, limit: int = 200) -> str:
    """`Type: message` of an exception raised by a user's code, on one line, the message cut to `limit` chars; a
    SyntaxError also names the file and line."""
    if isinstance(exc, SyntaxError):
        message = f"{exc.msg} ({exc.filename}, line {exc.lineno})"
    else:
        message = str(exc)
    message = " ".join(message.split())
    if len(message) > limit:
        message = message[:limit].rstrip() + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class _Checker:
    """Builds the ContractError for one family: `fail` for a part found broken, `guard` around the family's code."""

    def __init__(self, label: str):
        self.label = label

    def fail(self, part: str, detail: str) -> ContractError:
        detail = " ".join(detail.splitlines())
        return ContractError(f"task family {self.label!r} breaks the task contract, part '{part}': {detail}")

    @contextlib.contextmanager
    def guard(self, part: str, doing: str, hint: str = ""):
        """Run one step of the family's code: any exception it raises becomes a ContractError naming the part,
        the step (`doing`) and the exception; a ContractError (a break found inside the step) passes through."""
        try:
            yield
        except ContractError:
            raise
        except Exception as exc:
            raise self.fail(part, f"{doing} raised {describe_exception(exc)}{hint}") from exc


def _check_spaces(env, check: _Checker) -> None:
    with check.guard("spaces", "reading action_space and observation_space"):
        action_space, observation_space = env.action_space, env.observation_space
    if not (isinstance(action_space, Box) and np.issubdtype(action_space.dtype, np.floating)
            and len(action_space.shape) == 1 and action_space.shape[0] >= 1):
        raise check.fail("spaces", "metarl supports continuous Box action spaces (a floating dtype, a 1-D shape); "
                                   f"this family's action space is {action_space!r}")
    if not (isinstance(observation_space, Box) and len(observation_space.shape) == 1):
        raise check.fail("spaces", "metarl supports Box observation spaces with a 1-D shape; "
                                   f"this family's observation space is {observation_space!r}")


def _check_tasks(env, check: _Checker) -> None:
    if not callable(getattr(env, "sample_tasks", None)):
        raise check.fail("sample_tasks", "the env has no method sample_tasks(rng: numpy.random.Generator, n: int)")
    with check.guard("sample_tasks", "calling sample_tasks(rng, 4)"):
        tasks = env.sample_tasks(np.random.default_rng(0), 4)
        again = env.sample_tasks(np.random.default_rng(0), 4)
    if not isinstance(tasks, list) or len(tasks) != 4:
        raise check.fail("sample_tasks", f"sample_tasks(rng, 4) must return a list of 4 tasks, got {tasks!r}")
    for task in tasks:
        params = getattr(type(task), "__dataclass_params__", None)
        if not dataclasses.is_dataclass(task) or not params.frozen:
            raise check.fail("sample_tasks", f"tasks must be frozen dataclasses, got {task!r}")
    with check.guard("sample_tasks", "comparing tasks with =="):
        same = again == tasks
    if not same:
        raise check.fail("sample_tasks", "two generators with the same seed gave different tasks: sampling must "
                                         "depend only on the rng argument, never on a global RNG")


def _check_reset_and_step(env, check: _Checker, steps: int) -> None:
    with check.guard("sample_tasks", "calling sample_tasks(rng, 1)"):
        task = env.sample_tasks(np.random.default_rng(1), 1)[0]
    with check.guard("reset", f"reset(seed=0, options={{'task': {task!r}}})"):
        env.reset(seed=0, options={"task": task})
    with check.guard("task", "reading env.task"):
        current = getattr(env, "task", None)
        if current != task:
            raise check.fail("task", f"after reset(options={{'task': {task!r}}}), env.task is {current!r}")
    with check.guard("reset", "reset()"):
        env.reset()
    with check.guard("task", "reading env.task"):
        if env.task != task:
            raise check.fail("task", f"reset() without options must keep the task {task!r}, "
                                     f"but env.task is {env.task!r}")
    env.action_space.seed(0)
    for _ in range(steps):
        with check.guard("step", "step(action)"):
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        with check.guard("info", "reading step's info and reward"):
            if info.get("task") != task:
                raise check.fail("info", f"step's info must carry 'task' = {task!r}, got {info.get('task')!r}")
            terms = {k: v for k, v in info.items() if k.startswith("reward_")}
            if not terms:
                raise check.fail("info", "step's info must carry every reward term as 'reward_<name>'; found none")
            if not np.isclose(float(reward), sum(float(v) for v in terms.values()), rtol=1e-6, atol=1e-8):
                raise check.fail("info", f"reward {reward} is not the sum of its terms {terms}")
        if terminated or truncated:
            with check.guard("reset", "reset() after the episode ended"):
                env.reset()
    with check.guard("bad task", "reset(options={'task': object()})",
                     "; a bad task must raise ValueError naming the family, the bad value and the allowed range"):
        try:
            env.reset(options={"task": object()})
        except ValueError:
            pass
        else:
            raise check.fail("bad task", "reset(options={'task': object()}) must raise ValueError naming the "
                                         "family, the bad value and the allowed range")
