"""Checkpoints: saving, keeping and compacting snapshots, loading and checking them, restoring a trainer, and
preparing a resume."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from metarl.common.files import replaced_atomically
from metarl.config import BOOKKEEPING_KEYS, Config, load_config, save_config
from metarl.runs.directory import require_run_dir
from metarl.runs.layout import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    CONFIG_FILE,
    KEPT_CHECKPOINTS_DIR,
    POLICY_SNAPSHOT,
    TRAINER_KEYS,
    RunError,
)
from metarl.runs.presets import check_env


def load_run(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> tuple[Path, Config, dict]:
    """Read a run directory's config and checkpoint, checking both; return (path, config, checkpoint).

    `checkpoint`: another checkpoint file of the run to read instead of its latest (a kept snapshot).
    """
    path = require_run_dir(run_dir)
    cfg = load_config(path / CONFIG_FILE)
    check_env(cfg.env)
    return path, cfg, load_checkpoint(path, checkpoint)


def load_trainer(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                 overrides: dict | None = None):
    """A Trainer restored from a run directory's latest checkpoint (or `checkpoint`, a kept snapshot).

    `overrides` change bookkeeping keys of the saved config for this process only (threads, batch sizes of a study);
    the run directory is never written. The caller closes the trainer. This is what `metarl eval` and the studies in
    benchmarks/studies/ start from. A run trained with device: cuda loads on the CPU where torch sees no GPU.
    """
    import torch

    from metarl.trainer import Trainer

    path, cfg, ckpt = load_run(run_dir, checkpoint)
    overrides = dict(overrides or {})
    if "device" not in overrides and cfg.device == "cuda" and not torch.cuda.is_available():
        # a run trained on a GPU, read on a machine without one: the device changes rounding, not results
        print(f"note: {path} was trained with device: cuda and torch sees no GPU here; loading it on the CPU",
              file=sys.stderr)
        overrides["device"] = "cpu"
    if overrides:
        cfg = load_config(path / CONFIG_FILE, overrides)
    trainer = Trainer(cfg)
    try:
        restore(trainer, ckpt, path)
    except BaseException:
        trainer.close()
        raise
    return trainer


# -- checkpoints ----------------------------------------------------------------------------------------------

def save_checkpoint(run_dir: Path, trainer_state: dict, last_eval: int) -> None:
    """Write checkpoint.pt atomically: never half-written."""
    import torch

    with replaced_atomically(run_dir / CHECKPOINT_FILE) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, "trainer": trainer_state, "last_eval_iteration": last_eval}, tmp)


def keep_checkpoint(run_dir: Path, iteration: int) -> Path:
    """Copy checkpoint.pt to checkpoints/iteration-NNNNNN.pt (atomically), a snapshot to study training with later.

    A kept snapshot is a complete checkpoint: copy it over checkpoint.pt to resume from that iteration.
    """
    path = kept_checkpoint_path(run_dir, iteration)
    path.parent.mkdir(exist_ok=True)
    with replaced_atomically(path) as tmp:
        shutil.copyfile(run_dir / CHECKPOINT_FILE, tmp)
    return path


def kept_checkpoint_path(run_dir: str | os.PathLike, iteration: int) -> Path:
    """Where a run keeps its snapshot of `iteration` (checkpoints/iteration-NNNNNN.pt), whether or not it did."""
    return Path(run_dir) / KEPT_CHECKPOINTS_DIR / f"iteration-{iteration:06d}.pt"


def compact_snapshot(source: Path, target: Path) -> None:
    """Write the checkpoint `source` as a policy-only snapshot `target` (atomically): the policy's parameters, the
    iteration and env steps, no optimiser moments or random-generator states. What a published run keeps of its
    training (load_trainer, restore and `metarl analyze` read it; it cannot be resumed from)."""
    import torch

    ckpt = load_checkpoint(source.parent, source)
    state = ckpt["trainer"]
    small = {"format": CHECKPOINT_FORMAT, "kind": POLICY_SNAPSHOT, "last_eval_iteration": ckpt["last_eval_iteration"],
             "trainer": {key: state[key] for key in ("policy", "iteration", "env_steps")}}
    target.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(target) as tmp:
        torch.save(small, tmp)


def is_policy_snapshot(ckpt: dict) -> bool:
    """A checkpoint that holds the policy alone (compact_snapshot): it can be evaluated and analysed, not resumed."""
    return ckpt.get("kind") == POLICY_SNAPSHOT


def kept_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """The run's kept snapshots (checkpoints/iteration-NNNNNN.pt), oldest first; none if it kept none."""
    return sorted((Path(run_dir) / KEPT_CHECKPOINTS_DIR).glob("iteration-*.pt"))


def checkpoint_iteration(ckpt: dict) -> int:
    """The last completed iteration a checkpoint (from load_checkpoint or load_run) holds."""
    return int(ckpt["trainer"]["iteration"])


def load_checkpoint(run_dir: Path, file: str | os.PathLike | None = None) -> dict:
    """Load and sanity-check checkpoint.pt (or `file`); any problem is a RunError naming the file."""
    import torch

    path = run_dir / CHECKPOINT_FILE if file is None else Path(file)
    if file is not None and not path.is_file():
        raise RunError(f"no checkpoint file {str(path)!r}; allowed: a file such as "
                       f"{str(run_dir / KEPT_CHECKPOINTS_DIR / 'iteration-000100.pt')!r}")
    if not path.is_file():
        raise RunError(f"no {CHECKPOINT_FILE} in {str(run_dir)!r}: the run stopped before its first checkpoint; "
                       "delete the folder and start the run again")
    try:
        # Our own files hold only tensors, dicts, lists and numbers, so the safe loader suffices.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file  # noqa: BLE001
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RunError(f"cannot read checkpoint {str(path)!r} ({type(exc).__name__}: {first}); the file is "
                       "damaged: restore a copy or start the run again") from None
    problem = _checkpoint_problem(ckpt)
    if problem:
        raise RunError(f"checkpoint {str(path)!r} is not a metarl checkpoint ({problem}); "
                       "restore a copy or start the run again")
    return ckpt


def _checkpoint_problem(ckpt: Any) -> str | None:
    if not isinstance(ckpt, dict):
        return f"expected a dict, got {type(ckpt).__name__}"
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        return f"format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}"
    missing = [k for k in ("trainer", "last_eval_iteration") if k not in ckpt]
    if not missing and isinstance(ckpt["trainer"], dict):
        needed = ("policy", "iteration", "env_steps") if is_policy_snapshot(ckpt) else TRAINER_KEYS
        missing = [f"trainer.{k}" for k in needed if k not in ckpt["trainer"]]
    elif not missing:
        return "'trainer' is not a dict"
    return f"missing {', '.join(missing)}" if missing else None


def restore(trainer, ckpt: dict, path: Path) -> None:
    """Put a checkpoint (from load_checkpoint) into a trainer built from the same run's config (to step through a
    run's snapshots with one trainer); RunError if it does not fit."""
    try:
        if is_policy_snapshot(ckpt):  # the policy alone: what evaluation and analysis need
            trainer.policy.load_state_dict(ckpt["trainer"]["policy"])
            state = ckpt["trainer"]
            trainer.iteration, trainer.env_steps = int(state["iteration"]), int(state["env_steps"])
        else:
            trainer.load_state_dict(ckpt["trainer"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise RunError(f"checkpoint {str(path / CHECKPOINT_FILE)!r} does not fit {CONFIG_FILE} ({first}); "
                       "was config.yaml edited after training started?") from None


# -- resuming -------------------------------------------------------------------------------------------------

def eval_due(cfg: Config, iteration: int) -> bool:
    """Held-out evaluation runs every eval_every iterations (0: never periodically) and after the last one."""
    if iteration <= 0:
        return False
    return iteration == cfg.iterations or (cfg.eval_every > 0 and iteration % cfg.eval_every == 0)


def is_complete(cfg: Config, ckpt: dict) -> bool:
    """True when the checkpoint reached cfg.iterations and its final evaluation was logged."""
    iteration = int(ckpt["trainer"]["iteration"])
    return iteration >= cfg.iterations and int(ckpt["last_eval_iteration"]) >= iteration


def speed_settings(speed: dict | None, when: str) -> dict:
    """A copy of `speed`, checked to hold only settings of speed and disk use (config.BOOKKEEPING_KEYS): the ones a
    saved run may take other values of (`when`: "on resume", "for an evaluation") without changing its results."""
    overrides = dict(speed or {})
    other = sorted(set(overrides) - set(BOOKKEEPING_KEYS))
    if other:
        raise RunError(f"{', '.join(other)} cannot change {when}; only {', '.join(BOOKKEEPING_KEYS)} can")
    return overrides


def prepare_resume(run_dir: str | os.PathLike, iterations: int | None = None,
                   speed: dict | None = None) -> tuple[Path, Config, dict]:
    """Load a run to continue, changing no file; with `iterations`, the returned config has that total, which
    `train` saves in config.yaml once the checkpoint has been restored (a refused resume edits nothing). `speed`:
    settings of speed and disk use (config.BOOKKEEPING_KEYS, e.g. {"device": "cpu"}) for this sitting alone."""
    path, cfg, ckpt = load_run(run_dir)
    if is_policy_snapshot(ckpt):
        raise RunError(f"{str(path / CHECKPOINT_FILE)!r} holds the policy alone (a published snapshot), not the state "
                       "training continues from; resume from a run's own checkpoint.pt")
    done = int(ckpt["trainer"]["iteration"])
    overrides = speed_settings(speed, "on resume")
    if iterations is not None and iterations != cfg.iterations:
        if iterations < done:
            raise RunError(f"--iterations {iterations} is below the checkpoint's iteration {done}; "
                           f"pass --iterations {done} or more")
        overrides["iterations"] = iterations
    if overrides:
        cfg = load_config(path / CONFIG_FILE, overrides)
    return path, cfg, ckpt


def _save_iterations(run_dir: Path, cfg: Config) -> None:
    """Record a resumed run's new total in config.yaml (only `iterations`: a caller's speed settings stay its own)."""
    saved = load_config(run_dir / CONFIG_FILE)
    if saved.iterations != cfg.iterations:
        save_config(dataclasses.replace(saved, iterations=cfg.iterations), run_dir / CONFIG_FILE)
