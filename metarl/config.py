"""Run configuration: one flat, typed, validated dataclass plus YAML/CLI loading.

Precedence is defaults < YAML file < overrides. Every field's help text and allowed
range live next to its default, so ``--help``, the README and error messages agree.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from metarl.common.files import write_text

__all__ = [
    "Config",
    "ConfigError",
    "acting_settings",
    "config_help",
    "env_kwargs",
    "config_to_dict",
    "load_config",
    "parse_overrides",
    "save_config",
    "validate",
]

ALGOS = ("anil", "maml")
# Keys that change speed or disk use, not results: a resumed run may use other values than it started with
# (`metarl train --resume RUN --set device=cpu`, the sweep's runs).
BOOKKEEPING_KEYS = ("sampler_threads", "torch_threads", "update_threads", "task_chunk", "checkpoint_every",
                    "keep_checkpoint_every", "max_bad_iterations", "warn_rejected_iterations", "tune_allocator",
                    "device")
# Keys that act only under one outer loop or inner rule: a run that does not use them gives the same numbers
# whatever they hold (acting_settings).
TRPO_KEYS = ("max_kl", "cg_iters", "cg_damping", "ls_max_steps", "ls_backtrack_ratio", "fvp_subsample", "fvp_precision")
PROMP_KEYS = ("promp_steps", "promp_clip", "promp_kl_coef", "promp_optimizer", "promp_lr", "promp_lr_schedule",
              "promp_max_kl")


class ConfigError(ValueError):
    """A configuration value, key or file is invalid; the message says which and why."""


# --- allowed-value constraints: (predicate, human-readable description) ---------------

Constraint = tuple[Callable[[Any], bool], str]


def _at_least(lo: float) -> Constraint:
    return (lambda v: v >= lo, f">= {lo}")


def _positive() -> Constraint:
    return (lambda v: v > 0, "> 0")


def _interval(lo: float, hi: float, lo_open: bool, hi_open: bool) -> Constraint:
    def ok(v: float) -> bool:
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    text = f"{lo} {'<' if lo_open else '<='} value {'<' if hi_open else '<='} {hi}"
    return (ok, text)


def _one_of(*options: str) -> Constraint:
    return (lambda v: v in options, "one of " + ", ".join(repr(o) for o in options))


def _layer_widths() -> Constraint:
    return (lambda v: len(v) >= 1 and all(w >= 1 for w in v),
            "a non-empty list of integers >= 1")


def _field(default: Any, help: str, allowed: Constraint | None = None) -> Any:
    """Declare a config field: default, one-line help, optional allowed-value check."""
    metadata = {"help": help, "allowed": allowed}
    if isinstance(default, list):
        return field(default_factory=lambda d=tuple(default): list(d), metadata=metadata)
    return field(default=default, metadata=metadata)


# --- the configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """All settings of a meta-training run; validated on construction."""

    env: str = _field("cheetah-dir", "task family: a registered short name (see `metarl envs`), "
                      "the gymnasium id of an env that honours the task contract, or module:Class")
    algo: str = _field("anil", "'anil' adapts only the policy head in the inner loop, "
                       "'maml' adapts every parameter (log-std included)", _one_of(*ALGOS))
    seed: int = _field(0, "seed of policy init, task sampling and environment noise")
    iterations: int = _field(500, "meta-iterations", _at_least(1))
    meta_batch_size: int = _field(40, "tasks per meta-iteration", _at_least(1))
    episodes_per_task: int = _field(20, "episodes per task per adaptation step and for the "
                                    "post-adaptation batch", _at_least(1))
    horizon: int | None = _field(None, "steps per episode; null = the family's own horizon "
                                 "(200 cheetah, 100 nav2d; a user's family: its class attribute `horizon`, "
                                 "else its gymnasium max_episode_steps)", _at_least(1))
    frame_skip: int | None = _field(None, "simulator steps per env step, for families that take it "
                                    "(cheetah: 5 = gymnasium's HalfCheetah-v5, 1 = the MAML code's rllab "
                                    "cheetah); null = the family's own", _at_least(1))
    forward_velocity: str | None = _field(None, "the v_x of the cheetah families' forward reward: 'displacement' "
                                          "(the torso's x displacement per env step / dt, gymnasium's) or 'com' "
                                          "(the x velocity of the centre of mass after the step, the MAML code's "
                                          "rllab cheetah); null = the family's own (displacement)",
                                          _one_of("displacement", "com"))
    hidden_sizes: list[int] = _field([100, 100], "policy MLP hidden layer widths",
                                     _layer_widths())
    init_log_std: float = _field(0.0, "initial log standard deviation of the Gaussian policy")
    inner_steps: int = _field(1, "inner-loop policy-gradient steps during meta-training",
                              _at_least(1))
    inner_lr: float = _field(0.1, "inner-loop step size", _positive())
    first_order: bool = _field(False, "drop second-order terms of the meta-gradient "
                               "(first-order MAML/ANIL)")
    gamma: float = _field(0.99, "discount factor", _interval(0, 1, True, False))
    gae_lambda: float = _field(1.0, "GAE lambda", _interval(0, 1, False, False))
    normalize_advantages: bool = _field(True, "normalise advantages per task")
    baseline_reg: float = _field(1e-5, "ridge regulariser of the linear feature baseline",
                                 _positive())
    max_kl: float = _field(0.01, "TRPO trust-region size (mean KL)", _positive())
    cg_iters: int = _field(10, "conjugate-gradient iterations", _at_least(1))
    cg_damping: float = _field(1e-5, "damping added to Fisher-vector products", _at_least(0))
    ls_max_steps: int = _field(15, "backtracking line-search steps", _at_least(1))
    ls_backtrack_ratio: float = _field(0.8, "step shrink factor per line-search step",
                                       _interval(0, 1, True, True))
    task_chunk: int = _field(2, "tasks per chunk of the meta-gradient, Fisher products and line search "
                             "(on the CPU small chunks run faster and bound the gradient's memory; on a GPU one "
                             "chunk of the whole meta-batch is fastest; the result does not depend on it)",
                             _at_least(1))
    fvp_subsample: float = _field(1.0, "fraction of each task's episodes used in Fisher-vector "
                                  "products (1.0 = all, as in the papers; less is faster)",
                                  _interval(0, 1, True, False))
    fvp_precision: str = _field("float32", "precision of the Fisher-vector products: 'bfloat16' runs them in "
                                "bfloat16 (faster where the hardware multiplies in bfloat16; the gradient and the "
                                "line search stay float32; docs/performance.md gives the error), 'auto' is bfloat16 "
                                "where the device has bfloat16 units (a CPU with AVX512-BF16 or AMX, a CUDA GPU that "
                                "supports it) and float32 elsewhere",
                                _one_of("float32", "bfloat16", "auto"))
    estimator: str = _field("reinforce", "inner-loop policy-gradient estimator: 'reinforce' (log pi, the MAML "
                            "code's), 'lvc' (ProMP's low-variance curvature) or 'dice' (DiCE's magic box); same "
                            "adapted parameters, different second-order meta-gradient (metarl/algorithm/estimators.py)",
                            _one_of("reinforce", "lvc", "dice"))
    inner_optimizer: str = _field("sgd", "inner-loop update rule: 'sgd' (theta - lr g, the papers'), 'meta-sgd' "
                                  "(a learned step size per parameter entry) or 'kfo' (learned Kronecker factors "
                                  "L G R per weight); the learned rules start as sgd and are meta-parameters "
                                  "(metarl/algorithm/inner_optimizers.py)", _one_of("sgd", "meta-sgd", "kfo"))
    kfo_psd: bool = _field(False, "kfo: apply the factors as L^T L and R^T R (a positive semi-definite "
                           "preconditioner)")
    outer: str = _field("trpo", "outer loop: 'trpo' (one KL-constrained natural-gradient step, the papers') or "
                        "'promp' (ProMP's clipped surrogate and inner-KL penalty, promp_steps optimiser steps; "
                        "metarl/algorithm/promp.py)", _one_of("trpo", "promp"))
    promp_steps: int = _field(5, "ProMP: optimiser steps per meta-iteration on the same episodes (ProMP code: 5)",
                              _at_least(1))
    promp_clip: float = _field(0.3, "ProMP: clip range of the likelihood ratio (ProMP code: 0.3)",
                               _interval(0, 1, True, True))
    promp_kl_coef: float = _field(5e-4, "ProMP: coefficient of the inner-step KL penalty (ProMP code: 5e-4, "
                                  "fixed)", _at_least(0))
    promp_optimizer: str = _field("adam", "ProMP: optimiser of the meta-parameters (ProMP code: adam)",
                                  _one_of("adam", "sgd"))
    promp_lr: float = _field(1e-3, "ProMP: the optimiser's step size (ProMP code: 1e-3)", _positive())
    promp_lr_schedule: str = _field("constant", "ProMP: the step size over training: 'constant' (the ProMP code's) "
                                    "or 'linear', from promp_lr at the first iteration down to promp_lr / "
                                    "iterations at the last (Stable-Baselines3's linear schedule for PPO), for "
                                    "calmer late updates (metarl/algorithm/promp.py: scheduled_lr)",
                                    _one_of("constant", "linear"))
    promp_max_kl: float | None = _field(None, "ProMP: a trust region on the iteration's update: where the mean KL "
                                        "between the sampling post-adaptation policy and the updated one exceeds "
                                        "this, the update is halved until inside (TRPO's backtracking line search "
                                        "on ProMP's promp_steps steps); null = none (the ProMP code's)",
                                        _positive())
    eval_every: int = _field(25, "held-out evaluation every N iterations "
                             "(0 = only at the end)", _at_least(0))
    eval_tasks: int = _field(40, "number of held-out test tasks", _at_least(1))
    eval_seed: int = _field(12345, "seed of the held-out test tasks, separate from training")
    eval_steps: int = _field(3, "adaptation steps evaluated (returns after 0..eval_steps)",
                             _at_least(0))
    eval_episodes_per_task: int = _field(20, "episodes per task per evaluation adaptation "
                                         "step", _at_least(1))
    eval_first_lr: float = _field(0.1, "evaluation step size of the first adaptation step",
                                  _positive())
    eval_later_lr: float = _field(0.05, "evaluation step size of later adaptation steps",
                                  _positive())
    max_bad_iterations: int = _field(3, "stop the run (exit code 3) after this many consecutive iterations with a "
                                     "non-finite return, surrogate, KL or meta-gradient, keeping the last good "
                                     "checkpoint (0 = never stop)", _at_least(0))
    warn_rejected_iterations: int = _field(10, "warn once when the TRPO step was rejected this many iterations in "
                                           "a row: the run is not training (0 = never warn)", _at_least(0))
    checkpoint_every: int = _field(10, "iterations between checkpoints", _at_least(1))
    keep_checkpoint_every: int = _field(0, "also keep a copy of the checkpoint every N iterations in "
                                        "checkpoints/ (0 = keep only the latest)", _at_least(0))
    sampler_threads: int = _field(2, "threads stepping the simulator", _at_least(1))
    torch_threads: int = _field(1, "torch intra-op threads while sampling (the simulator's threads "
                                "use the cores then)", _at_least(1))
    update_threads: int = _field(1, "torch intra-op threads for the inner loop and the TRPO "
                                 "update, while the simulator is idle (the presets use 2)", _at_least(1))
    dtype: str = _field("float32", "floating-point type of the policy, the episodes and the update: 'float64' makes "
                        "runs on different numbers of ranks agree to round-off (TRPO's conjugate gradient amplifies "
                        "float32 round-off, so float32 runs drift apart after the first update; docs/scaling.md)",
                        _one_of("float32", "float64"))
    device: str = _field("cpu", "where the policy, the inner loop and the TRPO update run: 'cpu', 'cuda', or "
                         "'auto' (cuda when a GPU is available); the simulator always runs on the CPU. On a GPU "
                         "set task_chunk to meta_batch_size (docs/performance.md)",
                         _one_of("cpu", "cuda", "auto"))
    physics: str = _field("mujoco", "the simulator: 'mujoco' (MuJoCo's C simulator on the CPU, float64) or 'mjx' "
                          "(MuJoCo on JAX's device, float32: episodes stay on that device; cheetah-dir, cheetah-vel "
                          "and nav2d; needs the gpu extra; metarl/envs/mjx.py)", _one_of("mujoco", "mjx"))
    physics_impl: str = _field("jax", "physics: mjx's implementation: 'jax' (MJX) or 'warp' (MuJoCo Warp, where "
                               "warp-lang is installed)", _one_of("jax", "warp"))
    tune_allocator: bool = _field(True, "keep freed memory in the process (glibc mallopt) instead of returning it "
                                  "to the OS after every product, which made the update page-fault its memory in "
                                  "again (metarl/common/allocator.py)")
    adaptive_update_threads: bool = _field(True, "use fewer update threads than update_threads while other "
                                           "processes keep a core busy (two threads beside a busy process are "
                                           "several times slower than one; docs/performance.md)")

    def __post_init__(self) -> None:
        # Normalise in place (int -> float for float fields, tuple -> list) and reject
        # bad values, so a Config that exists is always a valid one.
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check_field(f.name, getattr(self, f.name)))


@functools.cache
def _fields() -> types.MappingProxyType:
    """Field name -> dataclasses.Field, in declaration order (computed once)."""
    return types.MappingProxyType({f.name: f for f in dataclasses.fields(Config)})


@functools.cache
def _hints() -> types.MappingProxyType:
    """Field name -> resolved type (annotations are strings under __future__)."""
    return types.MappingProxyType(typing.get_type_hints(Config))


# --- checking one value ---------------------------------------------------------------

_EXPECTED = {str: "a string", bool: "a boolean (true/false)", int: "an integer",
             float: "a number", int | None: "an integer or null", str | None: "a string or null",
             float | None: "a number or null",
             list[int]: "a list of integers"}


def _where(source: str | None) -> str:
    return f" ({source})" if source else ""


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _coerce(hint: Any, v: Any) -> tuple[bool, Any]:
    """Return (ok, normalised value) for value ``v`` against type ``hint``."""
    if hint is str:
        return isinstance(v, str), v
    if hint is bool:
        return isinstance(v, bool), v
    if hint is int:
        return (True, int(v)) if _is_int(v) else (False, v)
    if hint is float:
        if isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v):
            return True, float(v)
        return False, v
    if hint == int | None:
        return (True, None) if v is None else _coerce(int, v)
    if hint == str | None:
        return (True, None) if v is None else _coerce(str, v)
    if hint == float | None:
        return (True, None) if v is None else _coerce(float, v)
    if hint == list[int]:
        if isinstance(v, (list, tuple)) and all(_is_int(x) for x in v):
            return True, [int(x) for x in v]
        return False, v
    raise TypeError(f"config.py has no checker for type {hint!r}")  # programming error


def _check_field(name: str, value: Any, source: str | None = None) -> Any:
    """Type-check and range-check one field; return the normalised value."""
    f = _fields()[name]
    hint = _hints()[name]
    ok, norm = _coerce(hint, value)
    if not ok:
        expected = _EXPECTED[hint]
        if hint in (float, float | None):
            expected += " (finite int or float)"
        detail = ""
        if isinstance(value, bool) and hint is not bool:
            detail = "; booleans are not accepted as numbers"
        elif isinstance(value, float) and hint in (int, int | None):
            detail = "; floats are not accepted as integers"
        elif isinstance(value, (list, tuple)) and hint == list[int]:
            bad = next(x for x in value if not _is_int(x))
            detail = f"; element {bad!r} ({type(bad).__name__}) is not an integer"
        raise ConfigError(f"{name}{_where(source)}: got {value!r} "
                          f"({type(value).__name__}), expected {expected}{detail}")
    allowed = f.metadata["allowed"]
    if allowed is not None and norm is not None and not allowed[0](norm):
        raise ConfigError(f"{name}{_where(source)}: got {value!r}, must be {allowed[1]}")
    return norm


def validate(cfg: Config) -> Config:
    """Re-check every field of ``cfg`` (e.g. after mutation through object.__setattr__)."""
    for name in _fields():
        _check_field(name, getattr(cfg, name))
    return cfg


# --- YAML dialect ---------------------------------------------------------------------
# PyYAML follows YAML 1.1, which reads `1e-5` (no dot) as a string; accept it as a float,
# and refuse duplicate keys rather than silently keeping the last one.

_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    pass


for _cls in (_Loader, _Dumper):  # dumper too, so a string like "1e-5" gets quoted
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT,
                               list("-+0123456789."))


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


# --- loading --------------------------------------------------------------------------


def _read_yaml_mapping(path: str | os.PathLike) -> dict:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(p)!r} does not exist") from None
    except OSError as e:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {e}") from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if data is None:  # empty file or comments only: nothing to set
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must be a YAML mapping of "
                          f"key: value, got {type(data).__name__}")
    return data


def _unknown_key_message(key: Any, source: str) -> str:
    names = list(_fields())
    close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
            else "valid keys: " + ", ".join(names))
    return f"unknown key {key!r} ({source}); {hint}"


def env_kwargs(cfg: Config) -> dict:
    """Keyword arguments for the family's env constructors: only the settings the config gives (not null)."""
    return {key: getattr(cfg, key) for key in ("frame_skip", "forward_velocity") if getattr(cfg, key) is not None}


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None,
                **kwargs: Any) -> Config:
    """Build a Config from defaults, then the YAML file at ``path``, then ``overrides``,
    then keyword arguments; all problems found are reported in one ConfigError."""
    layers: list[tuple[str, dict]] = []
    if path is not None:
        layers.append((f"in {os.fspath(path)}", _read_yaml_mapping(path)))
    if overrides:
        layers.append(("from override", dict(overrides)))
    if kwargs:
        layers.append(("from keyword argument", kwargs))

    fields = _fields()
    values: dict[str, Any] = {}
    problems: list[str] = []
    for source, mapping in layers:
        for key, value in mapping.items():
            if key not in fields:
                problems.append(_unknown_key_message(key, source))
                continue
            try:
                values[key] = _check_field(key, value, source)
            except ConfigError as e:
                problems.append(str(e))
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} configuration problems:\n  - "
                          + "\n  - ".join(problems))
    return Config(**values)


def parse_overrides(items: list[str]) -> dict:
    """Parse CLI ``key=value`` items into a dict; values are read as YAML (``true``,
    ``null``, ``[64, 64]``, ``1e-3``). Keys are checked later by load_config."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"malformed override {item!r}: expected key=value, "
                              "e.g. inner_lr=0.05 or hidden_sizes=[64,64]")
        try:
            out[key] = _yaml_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"malformed override {item!r}: value is not valid YAML "
                              f"({e})") from None
    return out


# --- saving and help ------------------------------------------------------------------


def config_to_dict(cfg: Config) -> dict:
    """Plain dict of every field in declaration order (lists copied)."""
    return {name: (list(v) if isinstance(v, list) else v)
            for name in _fields() for v in [getattr(cfg, name)]}


def acting_settings(cfg: Config) -> dict:
    """The settings that decide a run's numbers: every key but those of speed and disk (BOOKKEEPING_KEYS) and those
    of the outer loop, inner rule or simulator the run does not use (TRPO's under ProMP, ProMP's under TRPO,
    kfo_psd unless kfo, physics_impl unless mjx). Two configs with equal acting settings train the same run."""
    unused = {*BOOKKEEPING_KEYS, *(PROMP_KEYS if cfg.outer == "trpo" else TRPO_KEYS),
              *(() if cfg.inner_optimizer == "kfo" else ("kfo_psd",)),
              *(() if cfg.physics == "mjx" else ("physics_impl",))}
    return {k: v for k, v in config_to_dict(cfg).items() if k not in unused}


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as commented YAML that load_config reads back equal."""
    body = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False,
                     default_flow_style=None, width=10**6)  # lists inline: [100, 100]
    lines = ["# Resolved metarl configuration (load with metarl.config.load_config).", ""]
    pending = iter(_fields().values())
    nxt = next(pending, None)
    for line in body.splitlines():  # put each field's help on the line above its key
        if nxt is not None and line.startswith(f"{nxt.name}:"):
            lines.append(f"# {_help_text(nxt)}")
            nxt = next(pending, None)
        lines.append(line)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_text(p, "\n".join(lines) + "\n")


def _help_text(f: dataclasses.Field) -> str:
    allowed = f.metadata["allowed"]
    return f.metadata["help"] + (f" ({allowed[1]})" if allowed else "")


def config_help() -> list[tuple[str, str, Any, str]]:
    """(name, type, default, help) for every field, in declaration order, for --help/README."""
    rows = []
    for f in dataclasses.fields(Config):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        rows.append((f.name, str(f.type), default, _help_text(f)))
    return rows
