"""Branching a run (`metarl branch`): a new run directory that starts from another run's kept checkpoint at iteration
N with some settings changed, so a candidate fix is screened from the state where it matters (a run that fell at
iteration 216, branched at 200 with a trust region) instead of from iteration 0.

The branch is an ordinary run directory: `metarl train --resume DEST` continues it, and a sweep whose cell it is
(same name and settings) resumes it. It holds the source's config with the changes, the checkpoint of iteration N as
its checkpoint.pt, the source's kept snapshots, metrics and set-up up to N, and two records of where it came from:

    branch.json   the source run, the iteration, and each changed setting (from -> to)
    timing.json   a first sitting for iterations 1..N, its seconds the sum of the source's time/iteration_s
                  (marked "branched_from"), so that a report's wall-clock per run covers the whole run

Without a change the branch continues exactly as its source did (tests/test_branch.py): a change's effect is all
that separates the two from N on.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from metarl import runs as run
from metarl.common.files import write_json, write_text
from metarl.config import load_config, save_config
from metarl.experiments.publish import snapshot_iteration
from metarl.experiments.sweep import BRANCH_FILE, TIMING_FILE


@dataclasses.dataclass
class Branch:
    """What branch_run wrote: the new run, the source and iteration, and the settings changed ({key: (from, to)})."""

    path: Path
    source: Path
    iteration: int
    changed: dict


def branch_run(source, iteration: int, dest, overrides: dict) -> Branch:
    """Write DEST, a run that continues SOURCE from its checkpoint of `iteration` with `overrides` applied to its
    config; RunError (one line) for a snapshot that is missing or holds the policy alone, a DEST that exists, or a
    change the checkpoint cannot take (another architecture)."""
    src = run.require_run_dir(source).resolve()
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise run.RunError(f"{str(dest)!r} already exists and is not empty; name a new folder with --out")
    snapshot = _snapshot(src, iteration)
    ckpt = run.load_checkpoint(src, snapshot)
    if run.is_policy_snapshot(ckpt):
        raise run.RunError(f"{str(snapshot)!r} holds the policy alone (a published snapshot), not the state training "
                           f"continues from; branch a published run at its last iteration "
                           f"({run.checkpoint_iteration(run.load_checkpoint(src))}) or an unpublished run")
    before = load_config(src / run.CONFIG_FILE)
    cfg = load_config(src / run.CONFIG_FILE, overrides)
    if cfg.iterations <= iteration:
        raise run.RunError(f"the branch would end at iteration {cfg.iterations}, not after {iteration}; pass "
                           f"--set iterations=N with N > {iteration}")
    _check_fits(cfg, ckpt, overrides)
    changed = {key: (getattr(before, key), getattr(cfg, key)) for key in overrides
               if getattr(before, key) != getattr(cfg, key)}

    dest.mkdir(parents=True, exist_ok=True)
    save_config(cfg, dest / run.CONFIG_FILE)
    shutil.copyfile(snapshot, dest / run.CHECKPOINT_FILE)
    for kept in run.kept_checkpoints(src):
        if snapshot_iteration(kept) <= iteration:
            (dest / run.KEPT_CHECKPOINTS_DIR).mkdir(exist_ok=True)
            shutil.copyfile(kept, dest / run.KEPT_CHECKPOINTS_DIR / kept.name)
    # the source's metrics, cut where its checkpoint of `iteration` ends, as a resume cuts them after a crash
    write_text(dest / run.METRICS_FILE, "".join(json.dumps(m) + "\n" for m in run.read_metrics(src)))
    run.truncate_metrics(dest / run.METRICS_FILE, iteration, int(ckpt["last_eval_iteration"]))
    metrics = run.read_metrics(dest)
    if (src / run.SETUP_FILE).is_file():
        shutil.copyfile(src / run.SETUP_FILE, dest / run.SETUP_FILE)
    train_s = sum(m.get("time/iteration_s", 0.0) for m in metrics)
    write_json(dest / TIMING_FILE, {"train_s": train_s, "eval_s": 0.0, "wall_s": train_s, "sittings": [
        {"branched_from": str(src), "from_iteration": 0, "to_iteration": iteration, "train_s": train_s,
         "eval_s": 0.0, "ended": True}]})
    write_json(dest / BRANCH_FILE, {"source": str(src), "iteration": iteration,
                                    "changed": {key: {"from": a, "to": b} for key, (a, b) in changed.items()}})
    return Branch(dest, src, iteration, changed)


def _snapshot(src: Path, iteration: int) -> Path:
    """The checkpoint file of `iteration`: a kept snapshot, or checkpoint.pt where it holds that iteration."""
    kept = run.kept_checkpoint_path(src, iteration)
    if kept.is_file():
        return kept
    latest = src / run.CHECKPOINT_FILE
    if latest.is_file() and run.checkpoint_iteration(run.load_checkpoint(src)) == iteration:
        return latest
    have = [int(p.stem.split("-")[-1]) for p in run.kept_checkpoints(src)]
    if latest.is_file():
        have.append(run.checkpoint_iteration(run.load_checkpoint(src)))
    listed = ", ".join(str(i) for i in sorted(set(have))) or "none"
    raise run.RunError(f"{str(src)!r} kept no checkpoint of iteration {iteration}; allowed: {listed} "
                       "(set keep_checkpoint_every to keep more)")


def _check_fits(cfg, ckpt: dict, overrides: dict) -> None:
    """Refuse, in one line, changes the checkpoint's state cannot be put into (the policy's shape, the optimiser)."""
    from metarl.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        trainer.load_state_dict(ckpt["trainer"])
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        given = " ".join(f"{k}={v}" for k, v in overrides.items())
        raise run.RunError(f"the checkpoint cannot continue with --set {given} ({first}); change only settings that "
                           "keep the policy and its optimiser as they are") from None
    finally:
        trainer.close()
