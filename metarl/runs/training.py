"""The training loop of a run directory: checkpoints on a schedule and on interrupts, evaluations, divergence
checks, and the record of what each sitting ran on."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from datetime import datetime
from pathlib import Path

from metarl.common.files import write_json
from metarl.common.lock import RunLock
from metarl.config import Config
from metarl.runs.checkpoints import (
    _save_iterations,
    checkpoint_iteration,
    eval_due,
    keep_checkpoint,
    kept_checkpoint_path,
    restore,
    save_checkpoint,
)
from metarl.runs.directory import run_lock, writable_dir
from metarl.runs.divergence import Diverged, DivergenceWatch
from metarl.runs.layout import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, SETUP_FILE, Interrupted, RunDiverged
from metarl.runs.metrics import RunLog, truncate_metrics, unpack_metrics
from metarl.runs.progress import Progress, eval_line, signals_deferred, sigterm_as_interrupt

# -- training -------------------------------------------------------------------------------------------------

def _keep_resumed_snapshot(run_dir: Path, cfg: Config, iteration: int) -> None:
    """The kept snapshot of the iteration a resume starts from, where the schedule asks for one and the run has none:
    a published run keeps its last snapshot only as checkpoint.pt (publish.repeated_snapshot), which training is
    about to move on from."""
    every = cfg.keep_checkpoint_every
    if every > 0 and iteration > 0 and iteration % every == 0:
        if not kept_checkpoint_path(run_dir, iteration).is_file():
            keep_checkpoint(run_dir, iteration)


def train(run_dir: Path, cfg: Config, ckpt: dict | None = None, bar: bool | None = None,
          world: World | None = None) -> dict:
    """Train to cfg.iterations from scratch or from `ckpt`, logging, evaluating and checkpointing as configured.

    Returns the last iteration's metrics ({} if none ran). The run directory is locked for the whole call (one
    writer). On Ctrl-C/SIGTERM, or any error, it saves the last completed iteration (and raises Interrupted for
    the former); a diverged run (metarl.runs.divergence) saves its last good iteration and raises RunDiverged.
    bar=None: a tqdm bar only when stderr is a terminal. `world`: this process's rank when torchrun launched several
    (metarl.distributed); rank 0 alone locks and writes the run directory.
    """
    from metarl.distributed import World
    from metarl.trainer import Trainer

    world = world or World()
    if bar is None:
        bar = sys.stderr.isatty()
    with (run_lock(run_dir) if world.main else contextlib.nullcontext()) as lock:
        if world.main:
            writable_dir(run_dir)
        trainer = Trainer(cfg, world)
        try:
            return _train(run_dir, cfg, ckpt, trainer, bar, lock)
        finally:
            trainer.close()


def _train(run_dir: Path, cfg: Config, ckpt: dict | None, trainer, bar: bool, lock: RunLock) -> dict:
    last_eval = -1
    if ckpt is not None:
        restore(trainer, ckpt, run_dir)
        last_eval = int(ckpt["last_eval_iteration"])
        if trainer.world.main:
            _save_iterations(run_dir, cfg)  # the resume is accepted: now config.yaml may change
            unpack_metrics(run_dir)  # a published copy, continued
            truncate_metrics(run_dir / METRICS_FILE, trainer.iteration, last_eval)
            _keep_resumed_snapshot(run_dir, cfg, trainer.iteration)
    if trainer.world.main:
        record_setup(run_dir, trainer.iteration)
    state = copy.deepcopy(trainer.state_dict())  # the last completed iteration: what an interrupt saves
    good = (state, last_eval)  # the last iteration whose metrics were all finite: what a divergence keeps
    watch = DivergenceWatch(cfg)
    # Rank 0 alone writes the run directory and evaluates (metarl.distributed); the other ranks only compute.
    main = trainer.world.main
    log = RunLog(run_dir, purge_step=None if ckpt is None else trainer.env_steps + 1) if main else _Quiet()
    progress = Progress(cfg.iterations, trainer.iteration, bar) if main else _Quiet()
    save, snapshot = (save_checkpoint, keep_checkpoint) if main else (_nothing, _nothing)
    evaluate = _evaluate if main else (lambda trainer, log, progress: trainer.iteration)
    if lock is not None and lock.stale:
        progress.message(f"note: took over {run_dir} from pid {lock.stale.get('pid')} on host "
                         f"{lock.stale.get('host')}, which stopped without releasing it (killed?)")
    metrics: dict = {}
    try:
        with sigterm_as_interrupt():
            if ckpt is None:
                log.hyperparameters(cfg)
                save(run_dir, state, last_eval)  # resumable from the very start
            if eval_due(cfg, trainer.iteration) and last_eval < trainer.iteration:
                last_eval = evaluate(trainer, log, progress)  # its evaluation was interrupted
                save(run_dir, state, last_eval)
                good = (state, last_eval)
            while trainer.iteration < cfg.iterations:
                metrics = trainer.step()
                with signals_deferred():
                    log.iteration(metrics)
                    state = copy.deepcopy(trainer.state_dict())
                    progress.update(metrics)
                try:
                    bad, warning = watch.check(metrics, last=trainer.iteration == cfg.iterations)
                except Diverged as exc:
                    save(run_dir, *good)
                    log.flush()
                    kept = checkpoint_iteration({"trainer": good[0]})
                    raise RunDiverged(f"{exc}; the last good checkpoint (iteration {kept}) is kept in "
                                      f"{run_dir / CHECKPOINT_FILE}: change the setting in "
                                      f"{run_dir / CONFIG_FILE} and resume, or start a new run") from None
                if warning:
                    with signals_deferred():
                        log.warning(trainer.iteration, trainer.env_steps, warning)
                        progress.message(warning)
                if eval_due(cfg, trainer.iteration):
                    last_eval = evaluate(trainer, log, progress)
                if not bad:
                    good = (state, last_eval)
                keep = cfg.keep_checkpoint_every > 0 and trainer.iteration % cfg.keep_checkpoint_every == 0
                due = keep or trainer.iteration % cfg.checkpoint_every == 0 or trainer.iteration == cfg.iterations
                if due and not bad:  # a bad iteration is never checkpointed: the good one before it stays
                    with signals_deferred():
                        save(run_dir, state, last_eval)
                        if keep:
                            snapshot(run_dir, trainer.iteration)
                        log.flush()
    except KeyboardInterrupt:
        save(run_dir, *(good if watch.bad_streak else (state, last_eval)))
        raise Interrupted(run_dir, int((good[0] if watch.bad_streak else state)["iteration"])) from None
    except Exception:
        if not watch.bad_streak:  # an error (a full disk, the user's env): the last completed iteration is saved
            with contextlib.suppress(Exception):
                save(run_dir, state, last_eval)
        raise
    finally:
        progress.close()
        log.close()
    return metrics


class _Quiet:
    """A RunLog or Progress that writes nothing (the ranks other than 0)."""

    def __getattr__(self, name):
        return _nothing


def _nothing(*args, **kwargs) -> None:
    return None


def _evaluate(trainer, log: RunLog, progress: Progress) -> int:
    """Held-out evaluation of the current policy, logged; returns the iteration it belongs to."""
    result = trainer.evaluate()
    with signals_deferred():
        log.evaluation(trainer.iteration, trainer.env_steps, result)
        progress.message(eval_line(trainer.iteration, result))
    return trainer.iteration


def record_setup(run_dir: Path, iteration: int) -> None:
    """Add this sitting's set-up (metarl.common.provenance.setup, from `iteration` on) to RUN_DIR/setup.json."""
    from metarl.common import provenance

    path = run_dir / SETUP_FILE
    try:
        sittings = json.loads(path.read_text(encoding="utf-8"))["sittings"] if path.is_file() else []
    except (ValueError, KeyError, TypeError):
        sittings = []  # a damaged record is replaced, never a reason to stop training
    sittings.append({"from_iteration": iteration, "started": datetime.now().isoformat(timespec="seconds"),
                     **provenance.setup()})
    write_json(path, {"sittings": sittings})
