"""Task families: distributions of gymnasium tasks for meta-RL, and the registry that names them.

Built in: `cheetah-dir`, `cheetah-vel`, `nav2d`. Users add their own with `register_family(...)`, or name a class
as `module:Class` wherever a family name is accepted. Families know nothing of learning.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Callable

import gymnasium
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

from metarl.envs.contract import ContractError, check_family
from metarl.envs.half_cheetah import (CheetahDirTask, CheetahVelTask, HalfCheetahBatch, HalfCheetahDirEnv,
                                      HalfCheetahVelEnv)
from metarl.envs.navigation import Nav2DTask, Navigation2DBatch, Navigation2DEnv

__all__ = ["Family", "ContractError", "check_family", "register_family", "families", "get_family", "make",
           "make_batched", "CheetahDirTask", "CheetahVelTask", "Nav2DTask", "HalfCheetahDirEnv", "HalfCheetahVelEnv",
           "Navigation2DEnv", "HalfCheetahBatch", "Navigation2DBatch"]


@dataclass(frozen=True)
class Family:
    """A registered task family: its names, its env class, and how to build its batched form."""

    name: str
    gym_id: str
    env_cls: type
    description: str
    horizon: int
    # make_batched(num_envs, num_threads=..., max_episode_steps=...) -> VectorEnv; None: a SyncVectorEnv of envs.
    batched: Callable[..., VectorEnv] | None = None


_REGISTRY: dict[str, Family] = {}


def register_family(name: str, env_cls: type, *, description: str | None = None,
                    batched: Callable[..., VectorEnv] | None = None, gym_id: str | None = None,
                    check: bool = True) -> Family:
    """Register a task family under a short `name` and a gymnasium id; return it.

    `env_cls` must honour the task contract (see `metarl.envs.contract`); with `check=True` it is exercised now
    and a `ContractError` names the part it breaks. `batched(num_envs, num_threads=..., max_episode_steps=...)`
    is an optional natively batched form; without it the sampler steps a `SyncVectorEnv` of single envs.
    """
    if check:
        check_family(env_cls, name)
    gym_id = gym_id or f"metarl/{env_cls.__name__}-v0"
    description = description or (env_cls.__doc__ or name).strip().splitlines()[0]
    family = Family(name, gym_id, env_cls, description, env_cls.horizon, batched)
    if gym_id not in gymnasium.registry:
        gymnasium.register(id=gym_id, entry_point=env_cls, max_episode_steps=env_cls.horizon)
    _REGISTRY[name] = family
    return family


def families() -> dict[str, str]:
    """Registered family names with a one-line description each."""
    return {name: family.description for name, family in _REGISTRY.items()}


def get_family(name: str) -> Family:
    """Look up a family by short name, gymnasium id, or `module:Class` (imported and registered on first use)."""
    if not isinstance(name, str):
        raise ValueError(f"a task family name must be a string, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    for family in _REGISTRY.values():
        if name in (family.gym_id, family.gym_id.removeprefix("metarl/"), f"metarl:{family.gym_id}"):
            return family
    if ":" in name and not name.startswith("metarl:"):
        return register_family(name, _import_class(name), check=True)
    known = ", ".join(f"{n} ({f.gym_id})" for n, f in _REGISTRY.items())
    raise ValueError(f"unknown task family {name!r}; known families: {known}; "
                     "or name your own as module:Class")


def _import_class(spec: str) -> type:
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"task family {spec!r}: cannot import module {module_name!r} ({exc})") from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"task family {spec!r}: module {module_name!r} has no attribute {class_name!r}")
    return cls


def make(name: str, **kwargs) -> gymnasium.Env:
    """A single env of the family `name` (short name, gymnasium id or module:Class), with its time limit.

    `kwargs` go to gymnasium.make and from there to the family's constructor (e.g. frame_skip for cheetah).
    """
    family = get_family(name)
    with _constructor_arguments(family, kwargs):
        return gymnasium.make(family.gym_id, **kwargs)


def make_batched(name: str, num_envs: int, *, num_threads: int = 1, max_episode_steps: int | None = None,
                 **env_kwargs) -> VectorEnv:
    """`num_envs` copies of the family stepped together in this process; set per-copy tasks with set_attr('task').

    `env_kwargs` go to each copy's constructor, or to the batched form, which must take the same keywords.
    """
    family = get_family(name)
    steps = max_episode_steps or family.horizon
    with _constructor_arguments(family, env_kwargs):
        if family.batched is not None:
            return family.batched(num_envs, num_threads=num_threads, max_episode_steps=steps, **env_kwargs)
        # A family without a batched form: its single envs side by side. Same-step autoreset keeps every copy
        # steppable after it terminates (the sampler masks those steps); reset() keeps each copy's task.
        return SyncVectorEnv([lambda: gymnasium.make(family.gym_id, max_episode_steps=steps, **env_kwargs)]
                             * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)


@contextlib.contextmanager
def _constructor_arguments(family: Family, kwargs: dict):
    """Turn a constructor's TypeError over keywords it does not take into a ValueError naming family and keys."""
    try:
        yield
    except TypeError as exc:
        if not kwargs or "argument" not in str(exc):
            raise
        raise ValueError(f"task family {family.name!r} does not take {', '.join(sorted(kwargs))} "
                         f"(given {kwargs}): {exc}") from exc


def _cheetah_batch(env_cls):
    return lambda n, **kw: HalfCheetahBatch(env_cls, n, **kw)


register_family("cheetah-dir", HalfCheetahDirEnv, gym_id="metarl/HalfCheetahDir-v0", check=False,
                description="HalfCheetah-Direction: run forwards or backwards (MAML paper); horizon 200",
                batched=_cheetah_batch(HalfCheetahDirEnv))
register_family("cheetah-vel", HalfCheetahVelEnv, gym_id="metarl/HalfCheetahVel-v0", check=False,
                description="HalfCheetah-Velocity: run at a goal velocity in [0, 2] (MAML paper); horizon 200",
                batched=_cheetah_batch(HalfCheetahVelEnv))
register_family("nav2d", Navigation2DEnv, gym_id="metarl/Navigation2D-v0", check=False,
                description="2D-Navigation: reach a goal in [-0.5, 0.5]^2 from the origin (MAML paper); horizon 100",
                batched=lambda n, **kw: Navigation2DBatch(n, **kw))
