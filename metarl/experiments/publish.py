"""Publishing finished runs to a folder that can be committed, in their compact form (gzipped metrics,
policy-only snapshots, PPO baselines as their actor alone), and compacting a published folder in place."""

from __future__ import annotations

import dataclasses
import filecmp
import os
import shutil
from pathlib import Path
from typing import Sequence

from metarl import runs as run
from metarl.common import files
from metarl.common.files import write_text
from metarl.experiments.records import PUBLISHED_FILES, PUBLISHED_SNAPSHOT_EVERY, RunRecord, collect_runs
from metarl.experiments.sweep import (
    BASELINES_DIR,
    COMMANDS_FILE,
    EVAL_STEPS,
    EVAL_TASKS,
    PPO_ACTOR_SUFFIX,
    PPO_FACTS_SUFFIX,
    PPO_MODEL_SUFFIX,
    recorded_commands,
    with_command_last,
)

# -- publishing ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Published:
    """What publish did: finished runs copied, those already there (left alone), baseline files copied."""

    copied: list[str]
    unchanged: list[str]
    baseline_files: int
    recheck: str | None  # a `metarl eval` command that re-checks one published number


def publish_files(source: Path, target: Path, keep_every: int = PUBLISHED_SNAPSHOT_EVERY) -> None:
    """A run's published form in `target`: config, final checkpoint, evaluation and timing as they are, the metrics
    gzipped at float32's precision (run.pack_metrics: read_metrics reads them back) and the kept snapshots whose
    iteration is a multiple of `keep_every` as policy-only (run.compact_snapshot: `metarl analyze` reads them),
    but not the one of checkpoint.pt's own iteration (repeated_snapshot), which keeps a published cheetah run near
    half a megabyte."""
    target.mkdir(parents=True, exist_ok=True)
    for name in PUBLISHED_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    if run.read_metrics(source):
        run.pack_metrics(source, target / run.METRICS_ARCHIVE)
        if target != source:
            (target / run.METRICS_FILE).unlink(missing_ok=True)  # an older, plain copy
    repeated = repeated_snapshot(source)
    for path in run.kept_checkpoints(source):
        if snapshot_iteration(path) % keep_every == 0 and path != repeated:
            run.compact_snapshot(path, target / run.KEPT_CHECKPOINTS_DIR / path.name)


def repeated_snapshot(run_dir: Path) -> Path | None:
    """The kept snapshot of checkpoint.pt's own iteration holding the same policy (a finished run's last snapshot),
    or None: `metarl analyze` reads that iteration once, from checkpoint.pt, and `metarl branch --at` falls back to
    it, so a published run keeps it once, as checkpoint.pt."""
    if not (run_dir / run.CHECKPOINT_FILE).is_file():
        return None
    ckpt = run.load_checkpoint(run_dir)
    snapshot = run.kept_checkpoint_path(run_dir, run.checkpoint_iteration(ckpt))
    if run.is_policy_snapshot(ckpt) or not snapshot.is_file():
        return None
    ours, theirs = ckpt["trainer"]["policy"], run.load_checkpoint(run_dir, snapshot)["trainer"]["policy"]
    return snapshot if ours.keys() == theirs.keys() and all(ours[k].equal(theirs[k]) for k in ours) else None


def snapshot_iteration(path: Path) -> int:
    """The iteration of a kept snapshot, from its name (checkpoints/iteration-NNNNNN.pt)."""
    return int(path.stem.split("-")[-1])


def compact_published(folder: str | os.PathLike, keep_every: int = PUBLISHED_SNAPSHOT_EVERY) -> list[Path]:
    """Bring every run directory under `folder` (at any depth) to the published form of publish_files, in place:
    metrics gzipped (an older archive packed again), kept snapshots every `keep_every` iterations and policy-only, the
    others and the one checkpoint.pt repeats removed; and every PPO model in a baselines/ folder reduced to its actor
    (compact_ppo_model). Returns the directories it changed."""
    changed = []
    for config in sorted(Path(folder).rglob(run.CONFIG_FILE)):
        path = config.parent
        before = sorted((p.name, p.stat().st_size) for p in path.rglob("*") if p.is_file())
        if (path / run.METRICS_FILE).is_file() or (path / run.METRICS_ARCHIVE).is_file():
            run.pack_metrics(path)  # an archive of an older form is packed again (PACKED_DIGITS)
            (path / run.METRICS_FILE).unlink(missing_ok=True)
        repeated = repeated_snapshot(path)
        for snapshot in run.kept_checkpoints(path):
            if snapshot_iteration(snapshot) % keep_every or snapshot == repeated:
                snapshot.unlink()
            else:
                run.compact_snapshot(snapshot, snapshot)
        if sorted((p.name, p.stat().st_size) for p in path.rglob("*") if p.is_file()) != before:
            changed.append(path)
    for model in sorted(Path(folder).rglob(f"{BASELINES_DIR}/*{PPO_MODEL_SUFFIX}")):
        compact_ppo_model(model)
        if model.parent not in changed:
            changed.append(model.parent)
    return changed


def publish_run(r: RunRecord, target: Path, keep_every: int = PUBLISHED_SNAPSHOT_EVERY) -> bool:
    """Copy one finished run to `target` in its published form (publish_files); False if it is there already."""
    ours, theirs = r.path / run.CHECKPOINT_FILE, target / run.CHECKPOINT_FILE
    if theirs.is_file() and filecmp.cmp(ours, theirs, shallow=False):
        return False  # published before: left alone, so that a copy re-evaluated since (eval.json) survives
    publish_files(r.path, target, keep_every)
    return True


def publish_baselines(root: Path, dest: Path) -> int:
    """Copy ROOT/baselines/ to DEST/baselines/: the results, the PPO models' facts, and each PPO model's actor alone
    (compact_ppo_model; the sweep re-evaluates a baseline from it); returns the number of files written."""
    source = root / BASELINES_DIR
    if not source.is_dir():
        return 0
    for model in sorted(source.glob("*" + PPO_MODEL_SUFFIX)):
        compact_ppo_model(model, remove=False)  # models trained before actors were kept beside them
    (dest / BASELINES_DIR).mkdir(exist_ok=True)
    copied = 0
    for path in sorted(source.iterdir()):
        if path.name.endswith((".json", PPO_ACTOR_SUFFIX)) and not path.name.endswith(".tmp"):
            shutil.copy2(path, dest / BASELINES_DIR / path.name)
            copied += 1
    return copied


def compact_ppo_model(model: Path, remove: bool = True) -> Path:
    """Write the actor of the PPO model at `model` (SB3's .zip) beside it as our policy's weights (.actor.pt, with the
    architecture of the config in its .ppo.json), unless it is there; with `remove`, delete the .zip. Returns the
    actor's path."""
    from metarl.config import load_config
    from metarl.experiments import baselines

    stem = model.name[: -len(PPO_MODEL_SUFFIX)]
    actor = model.with_name(stem + PPO_ACTOR_SUFFIX)
    if not actor.is_file():
        facts = files.read_json(model.with_name(stem + PPO_FACTS_SUFFIX))
        cfg = load_config(None, facts["config"])
        baselines.save_actor(baselines.ppo_policy_state(baselines.load_ppo(model), cfg), actor)
    if remove:
        model.unlink()
    return actor


def publish(root: str | os.PathLike, dest: str | os.PathLike, command: Sequence[str] | None = None,
            keep_every: int = PUBLISHED_SNAPSHOT_EVERY, unfinished: bool = False) -> Published:
    """Copy the finished runs of the sweep under ROOT (with `unfinished`, also those still training, as they stand:
    the report lists them as interrupted at iteration N of M, and a sweep resumes a copy of one), its baselines
    and its commands.txt to DEST.

    A run already in DEST with the same final checkpoint is skipped. DEST's commands.txt keeps the commands
    published there from elsewhere first, then ROOT's, ending with this `command` (also recorded in ROOT).
    """
    from metarl.experiments.sweep import record_command

    root, dest = Path(root), Path(dest)
    runs = [r for r in collect_runs(root) if r.finished or (unfinished and r.iterations_done > 0)]
    dest.mkdir(parents=True, exist_ok=True)
    copied, unchanged = [], []
    for r in runs:
        (copied if publish_run(r, dest / r.name, keep_every) else unchanged).append(r.name)
    files = publish_baselines(root, dest)
    ours = recorded_commands(root) if command is None else with_command_last(recorded_commands(root), command)
    merged = [line for line in recorded_commands(dest) if line not in ours] + ours
    write_text(dest / COMMANDS_FILE, "".join(line + "\n" for line in merged))
    if command is not None:
        record_command(root, command)
    recheck = None
    if runs:
        r = runs[0]
        recheck = (f"metarl eval {dest / r.name} --tasks {EVAL_TASKS} --steps {EVAL_STEPS} "
                   f"--episodes {r.cfg.eval_episodes_per_task} --out /tmp/{r.name}-eval.json")
    return Published(copied, unchanged, files, recheck)
