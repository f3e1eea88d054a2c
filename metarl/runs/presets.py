"""Resolving a run's configuration: a family's preset, a named preset or a file, then --set and the flags."""

from __future__ import annotations

from pathlib import Path

from metarl.config import Config, env_kwargs, load_config
from metarl.envs import ContractError, get_family, is_built_in, make, resolve_horizon
from metarl.runs.layout import PRESET_FAMILIES, RunError

# -- configuration --------------------------------------------------------------------------------------------

def check_env(name: str) -> str:
    """Resolve a task family name (short name, gymnasium id or module:Class); return its registered name."""
    try:
        return get_family(name).name
    except (ValueError, ContractError) as exc:
        raise RunError(f"{exc}. List the built-in families with `metarl envs`.") from None


def presets_dir() -> Path:
    """The installed presets folder (metarl.configs: configs/ of a checkout, or site-packages/metarl/configs)."""
    from importlib.resources import files

    return Path(str(files("metarl.configs")))


def preset_path(name: str) -> Path:
    """The installed preset NAME.yaml (a built-in family's protocol, or quickstart); RunError if it is missing."""
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in presets_dir().glob("*.yaml"))) or "none"
        raise RunError(f"preset {name!r} is not installed ({path} is missing; installed presets: {known}); "
                       "reinstall metarl (`pip install .`) or pass --config FILE")
    return path


def default_config_file(env: str) -> Path | None:
    """The protocol preset of a built-in family (never silently skipped): the installed preset named after it
    (`ant-vel.yaml`; for a family named with a task, `metaworld-ml1:reach`, the one named before the ':'); None for a
    user's family or a built-in one without a preset (Config defaults apply, with --set on top)."""
    name = check_env(env)
    if name in PRESET_FAMILIES:
        return preset_path(name)
    if not is_built_in(name):
        return None
    path = presets_dir() / f"{name.partition(':')[0]}.yaml"
    return path if path.is_file() else None


def paper_config_file(env: str) -> Path | None:
    """The papers' protocol preset of a built-in family whose default departs from it (cheetah-dir-paper.yaml for
    cheetah-dir); None where the family's own preset is the papers' protocol, or for a user's family."""
    name = check_env(env)
    path = presets_dir() / f"{name}-paper.yaml"
    return path if name in PRESET_FAMILIES and path.is_file() else None


def family_default(env: str) -> Config:
    """What `metarl train --env ENV` trains, before --set: the family's preset, or Config's defaults for a user's
    family."""
    path = default_config_file(env)
    return load_config(path) if path else Config(env=env)


def config_file_path(config_file: str) -> str | Path:
    """--config: a YAML file, or the name of an installed preset (`--config quickstart`)."""
    if Path(config_file).is_file() or "/" in config_file or config_file.endswith((".yaml", ".yml")):
        return config_file
    return preset_path(config_file)


def resolve_config(env: str | None, config_file: str | None, overrides: dict, flags: dict) -> Config:
    """Build the run's Config: defaults < config file < --set overrides < explicit flags (--env, --algo, ...)."""
    if env is None and config_file is None:
        raise RunError("train needs --env NAME (see `metarl envs`) or --config FILE, or --resume RUN_DIR")
    if env is not None:
        flags = {"env": env, **flags}
        if config_file is None:
            config_file = default_config_file(env)
    given = {k: v for k, v in flags.items() if v is not None}
    if config_file is not None:
        config_file = config_file_path(str(config_file))
    cfg = load_config(config_file, {**overrides, **given})
    check_env(cfg.env)  # a config file may name the env: check it before creating anything
    try:  # a family without a horizon of its own needs --set horizon=N, and one past the family's longest episode
        # (Meta-World's 500) is refused: both said before creating anything too
        resolve_horizon(cfg.env, cfg.horizon)
    except (ContractError, ValueError) as exc:
        raise RunError(str(exc)) from None
    if cfg.device != "cpu":  # a GPU that is not there: said before creating anything (torch only imported then)
        from metarl.trainer import resolve_device

        try:
            resolve_device(cfg.device)
        except ValueError as exc:
            raise RunError(str(exc)) from None
    if cfg.physics == "mjx":  # a family, implementation or device the device physics cannot run: said here too
        from metarl.envs.mjx import problem
        from metarl.trainer import resolve_device

        reason = problem(cfg.env, cfg.physics_impl, cfg.forward_velocity, resolve_device(cfg.device).type)
        if reason:
            raise RunError(reason)
    kwargs = env_kwargs(cfg)
    if kwargs:  # settings the family may not take (frame_skip): also checked before creating anything
        try:
            make(cfg.env, **kwargs).close()
        except ValueError as exc:
            raise RunError(f"{exc}; leave {', '.join(sorted(kwargs))} null for this family") from None
    return cfg
