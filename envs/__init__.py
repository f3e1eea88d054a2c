"""Task families: distributions of gymnasium tasks for meta-RL, and the registry that names them.

Built in: `cheetah-dir`, `cheetah-vel`, `nav2d`, `ant-vel`, `ant-dir`, `ant-goal`,
`humanoid-dir`, `hopper-params`, `walker-params`; with the `metaworld` extra, `metaworld-ml1:<task>` and
`metaworld-ml10` (built on first use: `metarl.envs.metaworld`). Users add their own with `register_family(...)`,
or, wherever a family name is accepted, name a class as `module:Class` or give the gymnasium id of an env that
honours the task contract. Families know nothing of learning.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Callable

import gymnasium
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv
from metarl.envs.ant import AntBatch, AntDirEnv, AntDirTask, AntGoalEnv, AntGoalTask, AntVelEnv, AntVelTask
from metarl.envs.contract import ContractError, check_family, describe_exception, valid_horizon
from metarl.envs.dynamics import DynamicsBatch, DynamicsTask, HopperParamsEnv, WalkerParamsEnv
from metarl.envs.half_cheetah import (
    CheetahDirTask,
    CheetahVelTask,
    HalfCheetahBatch,
    HalfCheetahDirEnv,
    HalfCheetahVelEnv,
)
from metarl.envs.humanoid import HumanoidBatch, HumanoidDirEnv, HumanoidDirTask
from metarl.envs.navigation import Nav2DTask, Navigation2DBatch, Navigation2DEnv

__all__ = ["Family", "ContractError", "check_family", "register_family", "families", "families_on_first_use",
           "has_test_split", "is_built_in", "get_family", "resolve_horizon", "make", "make_batched", "CheetahDirTask", "CheetahVelTask",
           "Nav2DTask",
           "HalfCheetahDirEnv", "HalfCheetahVelEnv", "Navigation2DEnv", "HalfCheetahBatch", "Navigation2DBatch",
           "AntVelTask", "AntDirTask", "AntGoalTask", "AntVelEnv", "AntDirEnv", "AntGoalEnv", "AntBatch",
           "HumanoidDirTask", "HumanoidDirEnv", "HumanoidBatch", "DynamicsTask", "HopperParamsEnv",
           "WalkerParamsEnv", "DynamicsBatch"]


@dataclass(frozen=True)
class Family:
    """A registered task family: its names, its env class, its own horizon and how to build its batched form."""

    name: str
    gym_id: str
    env_cls: type
    description: str
    # Steps per episode: the class's `horizon`, else its gymnasium time limit; None: the config must give one.
    horizon: int | None
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
    The family's horizon is `env_cls.horizon`, else the time limit gymnasium has for it (None if neither).
    """
    if check:
        check_family(env_cls, name)
    gym_id = gym_id or f"metarl/{env_cls.__name__}-v0"
    description = description or ((env_cls.__doc__ or "").strip() or name).splitlines()[0]
    horizon = getattr(env_cls, "horizon", None)
    if horizon is None:
        horizon = _registered_time_limit(env_cls, gym_id)
    family = Family(name, gym_id, env_cls, description, horizon, batched)
    if gym_id not in gymnasium.registry:
        gymnasium.register(id=gym_id, entry_point=env_cls, max_episode_steps=horizon)
    _REGISTRY[name] = family
    return family


def _registered_time_limit(env_cls: type, gym_id: str) -> int | None:
    """The time limit gymnasium has for `env_cls`: that of `gym_id`, else the one all ids whose entry point is
    `env_cls` agree on; None if there is none (or they disagree)."""
    spec = gymnasium.registry.get(gym_id)
    if spec is not None and valid_horizon(spec.max_episode_steps):
        return spec.max_episode_steps
    path = f"{env_cls.__module__}:{env_cls.__qualname__}"
    limits = {s.max_episode_steps for s in gymnasium.registry.values()
              if s.entry_point in (env_cls, path) and valid_horizon(s.max_episode_steps)}
    return limits.pop() if len(limits) == 1 else None


def resolve_horizon(family: Family | str, configured: int | None = None) -> int:
    """Steps per episode for `family` (a Family or any name get_family takes): `configured` (the config's
    `horizon`) if given, else the family class's `horizon`, else its gymnasium time limit; ContractError if none."""
    if isinstance(family, str):
        family = get_family(family)
    if configured is not None:
        if not valid_horizon(configured):
            raise ValueError(f"horizon must be an int >= 1 (steps per episode), got {configured!r}")
        most = getattr(family.env_cls, "max_horizon", None)
        if most is not None and configured > most:
            raise ValueError(f"horizon {configured} is out of range for task family {family.name!r}; allowed: "
                             f"1 to {most} (the family's longest episode)")
        return configured
    if family.horizon is not None:
        return family.horizon
    raise ContractError(f"task family {family.name!r} has no horizon (steps per episode): pass --set horizon=N "
                        "(config key `horizon`), give the class an int attribute `horizon`, or register it with "
                        "gymnasium.register(..., max_episode_steps=N)")


def families() -> dict[str, str]:
    """Registered family names with a one-line description each."""
    return {name: family.description for name, family in _REGISTRY.items()}


def is_built_in(name: str) -> bool:
    """Whether `name` is a family metarl ships (the built-in families, the Meta-World ones), not a user's."""
    prefix = name.partition(":")[0]
    return name in _BUILT_IN_NAMES or any(p.partition(":")[0] == prefix for p in _ON_FIRST_USE)


def has_test_split(name: str) -> bool:
    """Whether the family `name` has held-out tasks of its own (`sample_test_tasks`: Meta-World's test goals and
    types), rather than held-out draws from its one distribution."""
    return callable(getattr(get_family(name).env_cls, "sample_test_tasks", None))


def families_on_first_use() -> dict[str, str]:
    """The families built on first use (they need an optional package), by name pattern, with a one-line
    description each: `metaworld-ml1:<task>`, `metaworld-ml10`."""
    return {pattern: description for pattern, (description, _) in _ON_FIRST_USE.items()}


def _metaworld_family(name: str, prefix: str, arg: str) -> Family:
    """The Meta-World family `name` (`metaworld-ml1:<task>` or `metaworld-ml10`), registered on first use."""
    from metarl.envs import metaworld as mw

    if prefix == "metaworld-ml10":
        if arg:
            raise ValueError(f"task family {name!r}: metaworld-ml10 takes no task name (it is ML10's 15 types)")
        env_cls, short = mw.family_class("ml10"), "ML10"
    else:
        allowed = mw.ml1_task_names()
        if arg.removesuffix("-v3") not in allowed:
            raise ValueError(f"task family {name!r}: unknown ML1 task {arg!r}; allowed: metaworld-ml1:<task> with "
                             f"<task> one of {', '.join(allowed)}")
        arg = arg.removesuffix("-v3")
        name = f"metaworld-ml1:{arg}"
        if name in _REGISTRY:
            return _REGISTRY[name]
        env_cls, short = mw.family_class("ml1", f"{arg}-v3"), f"ML1-{arg}"
    return register_family(name, env_cls, gym_id=f"metarl/MetaWorld{short}-v0", check=False,
                           batched=lambda n, **kw: mw.MetaWorldBatch(env_cls, n, **kw))


# Families built on first use, by the part of the name before ':' (a task name after it, where they take one):
# pattern -> (description, build(name, prefix, argument) -> Family). They need an optional package.
_ON_FIRST_USE = {
    "metaworld-ml1:<task>": ("Meta-World ML1: one manipulation task type (reach, push, pick-place, ...), 50 training "
                             "and 50 held-out goals (Yu et al., CoRL 2019); horizon 500; the metaworld extra",
                             _metaworld_family),
    "metaworld-ml10": ("Meta-World ML10: 10 training task types, 5 held-out types, 50 goals each (Yu et al., "
                       "CoRL 2019); horizon 500; the metaworld extra", _metaworld_family),
}


def get_family(name: str) -> Family:
    """Look up a family by short name, gymnasium id, or `module:Class` (imported and registered on first use).

    A gymnasium id (also `module:id`, the module imported first so that it registers the id) whose env honours
    the task contract is registered as a family under its id on first use; one whose env does not is refused.
    """
    if not isinstance(name, str):
        raise ValueError(f"a task family name must be a string, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    for family in _REGISTRY.values():
        if name in (family.gym_id, family.gym_id.removeprefix("metarl/"), f"metarl:{family.gym_id}"):
            return family
    prefix, _, arg = name.partition(":")
    for pattern, (_, build) in _ON_FIRST_USE.items():
        if pattern.partition(":")[0] == prefix:
            return build(name, prefix, arg)
    module_name, _, rest = name.partition(":") if ":" in name else ("", "", name)
    if module_name and rest.isidentifier():
        return register_family(name, _import_class(name), check=True)
    if module_name:
        _import_module(name, module_name)  # `module:ns/Name-v0`: the module registers the id when imported
    family = _gymnasium_family(rest)
    if family is not None:
        return family
    known = ", ".join(f"{n} ({f.gym_id})" for n, f in _REGISTRY.items())
    raise ValueError(f"unknown task family {name!r}: not a registered family, a registered gymnasium id or "
                     f"module:Class{_gymnasium_hint(rest)}; known families: {known}; "
                     "or name your own as module:Class")


# What a gymnasium env needs to be a task family, for the error that refuses one (metarl.envs.contract in short).
_CONTRACT_SUMMARY = ("a task family is a gymnasium.Env that builds with no arguments, has a continuous 1-D Box "
                     "action space and a 1-D Box observation space, and whose env.unwrapped has "
                     "sample_tasks(rng, n) returning n frozen-dataclass tasks, takes its task from "
                     "reset(options={'task': task}) and keeps it on a plain reset(), exposes it as env.task, puts "
                     "'task' and every 'reward_<name>' term in step's info, and raises ValueError for a bad task "
                     "(see metarl.envs.contract)")


def _gymnasium_family(gym_id: str) -> Family | None:
    """The family for a gymnasium id, registered under the id on first use; None if gymnasium has no such id."""
    spec = gymnasium.registry.get(gym_id)
    if spec is None:
        return None
    if spec.id in _REGISTRY:
        return _REGISTRY[spec.id]
    entry_point = spec.entry_point
    try:
        env_cls = (gymnasium.envs.registration.load_env_creator(entry_point) if isinstance(entry_point, str)
                   else entry_point)
    except Exception as exc:  # the entry point's module is the user's code: whatever it raises, one line
        raise ValueError(f"gymnasium id {gym_id!r}: cannot load its entry point {entry_point!r} "
                         f"({describe_exception(exc)})") from exc
    refused = f"gymnasium env {gym_id!r} ({_entry_point_name(entry_point)}) exists but is not a metarl task family"
    if isinstance(env_cls, type) and not callable(getattr(env_cls, "sample_tasks", None)):
        # Refused without building it (a MuJoCo or Atari env is slow to build, and may print while it loads).
        raise ContractError(f"{refused} (it has no method sample_tasks(rng, n)): {_CONTRACT_SUMMARY}")
    try:
        return register_family(spec.id, env_cls, gym_id=spec.id, check=True)
    except ContractError as exc:
        detail = str(exc).partition("breaks the task contract, ")[2] or str(exc)
        raise ContractError(f"{refused} ({detail}): {_CONTRACT_SUMMARY}") from None
    except Exception as exc:  # the check turns the env's own errors into ContractError; this is a last resort
        raise ContractError(f"{refused} (checking it raised {describe_exception(exc)}): {_CONTRACT_SUMMARY}") from None


def _entry_point_name(entry_point) -> str:
    if isinstance(entry_point, str):
        return entry_point
    return f"{getattr(entry_point, '__module__', '?')}:{getattr(entry_point, '__qualname__', entry_point)}"


def _gymnasium_hint(gym_id: str) -> str:
    """gymnasium's own advice when `gym_id` names a registered env at a version it does not have, else ''."""
    try:
        gymnasium.spec(gym_id)
    except (gymnasium.error.VersionNotFound, gymnasium.error.DeprecatedEnv) as exc:
        return f" (gymnasium: {exc})"
    except gymnasium.error.Error:
        pass
    return ""


def _import_module(spec: str, module_name: str):
    """Import a user's module; whatever it raises (a SyntaxError included) becomes one ValueError line naming it."""
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"task family {spec!r}: cannot import module {module_name!r} "
                         f"({describe_exception(exc)})") from exc


def _import_class(spec: str) -> type:
    module_name, _, class_name = spec.partition(":")
    module = _import_module(spec, module_name)
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
    steps = resolve_horizon(family, max_episode_steps)
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


def _batch_of(batch_cls, env_cls):
    return lambda n, **kw: batch_cls(env_cls, n, **kw)


# The built-in families: name, env class, gymnasium id, one-line description, batched form.
_BUILT_IN = [
    ("cheetah-dir", HalfCheetahDirEnv, "metarl/HalfCheetahDir-v0",
     "HalfCheetah-Direction: run forwards or backwards (MAML paper); horizon 200",
     _batch_of(HalfCheetahBatch, HalfCheetahDirEnv)),
    ("cheetah-vel", HalfCheetahVelEnv, "metarl/HalfCheetahVel-v0",
     "HalfCheetah-Velocity: run at a goal velocity in [0, 2] (MAML paper); horizon 200",
     _batch_of(HalfCheetahBatch, HalfCheetahVelEnv)),
    ("nav2d", Navigation2DEnv, "metarl/Navigation2D-v0",
     "2D-Navigation: reach a goal in [-0.5, 0.5]^2 from the origin (MAML paper); horizon 100",
     lambda n, **kw: Navigation2DBatch(n, **kw)),
    ("ant-vel", AntVelEnv, "metarl/AntVel-v0",
     "Ant-Velocity: move at a goal velocity in [0, 3] (MAML code); horizon 200", _batch_of(AntBatch, AntVelEnv)),
    ("ant-dir", AntDirEnv, "metarl/AntDir-v0",
     "Ant-Direction: move forwards or backwards (MAML code); horizon 200", _batch_of(AntBatch, AntDirEnv)),
    ("ant-goal", AntGoalEnv, "metarl/AntGoal-v0",
     "Ant-Goal: reach a goal position in [-3, 3]^2 (MAML code); horizon 200", _batch_of(AntBatch, AntGoalEnv)),
    ("humanoid-dir", HumanoidDirEnv, "metarl/HumanoidDir-v0",
     "Humanoid-Direction: walk forwards or backwards (ProMP); horizon 200", lambda n, **kw: HumanoidBatch(n, **kw)),
    ("hopper-params", HopperParamsEnv, "metarl/HopperParams-v0",
     "Hopper-Params: hop forwards under randomised masses, inertias, frictions, damping (ProMP); horizon 200",
     _batch_of(DynamicsBatch, HopperParamsEnv)),
    ("walker-params", WalkerParamsEnv, "metarl/WalkerParams-v0",
     "Walker-Params: walk forwards under randomised masses, inertias, frictions, damping (ProMP); horizon 200",
     _batch_of(DynamicsBatch, WalkerParamsEnv)),
]
_BUILT_IN_NAMES = frozenset(entry[0] for entry in _BUILT_IN)
for _name, _cls, _gym_id, _description, _batched in _BUILT_IN:
    register_family(_name, _cls, gym_id=_gym_id, check=False, description=_description, batched=_batched)
