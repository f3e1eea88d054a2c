"""What the long studies share: train a run to its length and evaluate it once, then publish its small files to a
folder in git, so that a study grows over sittings on machines that keep nothing outside git."""

from __future__ import annotations

import shutil
from pathlib import Path

from metarl.common.files import read_json
from metarl.config import load_config
from metarl.experiments.report import publish_files
from metarl.experiments.sweep import speed_of
from metarl.runs import (
    CHECKPOINT_FILE,
    EVAL_FILE,
    create_run,
    evaluate_run,
    is_complete,
    load_run,
    prepare_resume,
    preset_path,
    train,
)

EVAL_STEPS = 3


def run_variant(run_dir: Path, preset: str, overrides: dict) -> None:
    """Train (or continue, to overrides' `iterations` if given) one run of the installed `preset` (a family's name
    for its default, or cheetah-dir-paper) with `overrides`, then evaluate its final checkpoint once (eval.json: 40
    held-out tasks, 0..3 steps). A run resumed here takes the preset's speed settings (a run started on a GPU
    continues on this machine's CPU)."""
    speed = speed_of(load_config(preset_path(preset)))
    if (run_dir / CHECKPOINT_FILE).exists():
        path, cfg, ckpt = prepare_resume(run_dir, overrides.get("iterations"), speed=speed)
        if not is_complete(cfg, ckpt):
            train(path, cfg, ckpt)
    else:
        cfg = load_config(preset_path(preset), overrides)
        train(create_run(cfg, run_dir), cfg)
    _, cfg, ckpt = load_run(run_dir)
    done = read_json(run_dir / EVAL_FILE) if (run_dir / EVAL_FILE).is_file() else None
    if not done or done.get("iteration") != ckpt["trainer"]["iteration"] or done.get("steps") != EVAL_STEPS:
        evaluate_run(run_dir, steps=EVAL_STEPS, speed=speed)


def publish(run_dir: Path, published: Path) -> Path:
    """Copy a run's small files, in their published form, to published/<its name> (atomically: a half copy never
    counts)."""
    target = published / run_dir.name
    partial = published / f".{run_dir.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    publish_files(run_dir, partial)  # the grid's published form: metrics gzipped, snapshots policy-only
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target
