"""Run directories: resolve a config, train with logging and checkpoints, resume, evaluate.

A run directory holds everything about one training run, so it can be inspected, resumed or evaluated later:

    config.yaml       the resolved configuration (load_config reads it back)
    checkpoint.pt     the latest trainer state, replaced atomically
    checkpoints/      copies of it every keep_checkpoint_every iterations (iteration-NNNNNN.pt), if set; a
                      published run keeps policy-only ones (compact_snapshot)
    metrics.jsonl     one JSON object per iteration, plus one per evaluation (its keys start with "eval/"); a
                      published run holds it gzipped as metrics.jsonl.gz, read the same way (read_metrics)
    events.out.*      TensorBoard scalars (x-axis: env steps) and the hyper-parameter table
    eval.json         written by `metarl eval` (with the set-up it ran on)
    setup.json        the set-up of each sitting that trained the run: versions, vector features (metarl.common.provenance)
    train.lock        held by the one process training the run (metarl.common.lock); empty when none is

Every JSON file here is strict JSON: a non-finite value (a diverged metric) is written as null (metarl.common.files).

The CLI (metarl.cli) only parses arguments and prints; everything that touches a run directory lives here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from metarl.common.files import dumps, replaced_atomically, write_json, write_text
from metarl.common.lock import RunLock, RunLocked
from metarl.config import BOOKKEEPING_KEYS, Config, config_to_dict, env_kwargs, load_config, save_config
from metarl.divergence import Diverged, DivergenceWatch
from metarl.envs import ContractError, get_family, make, resolve_horizon

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
KEPT_CHECKPOINTS_DIR = "checkpoints"  # snapshots kept every keep_checkpoint_every iterations
METRICS_FILE = "metrics.jsonl"
METRICS_ARCHIVE = "metrics.jsonl.gz"  # a published run's metrics, gzipped (read_metrics reads either)
POLICY_SNAPSHOT = "policy"  # a kept snapshot's "kind" when it holds the policy alone (compact_snapshot)
EVAL_FILE = "eval.json"
SETUP_FILE = "setup.json"  # what each sitting of a run ran on (metarl.common.provenance)
CHECKPOINT_FORMAT = 1
# Built-in families whose protocol preset ships with the package (metarl.configs): a missing one is an error.
PRESET_FAMILIES = ("cheetah-dir", "cheetah-vel", "nav2d")
TRAINER_KEYS = ("policy", "rng", "noise", "iteration", "env_steps")


class RunError(Exception):
    """An expected problem with a run (unknown env, missing run directory, unreadable checkpoint).

    The message says what is wrong and how to fix it; the CLI prints it as one line, without a traceback.
    """


class RunDiverged(RunError):
    """Training stopped because its metrics stopped being finite; the last good checkpoint is kept."""


class Interrupted(Exception):
    """Training was stopped by Ctrl-C or SIGTERM after a checkpoint of the last completed iteration was saved."""

    def __init__(self, run_dir: Path, iteration: int):
        super().__init__(f"interrupted; checkpoint of iteration {iteration} saved in {run_dir}")
        self.run_dir, self.iteration = run_dir, iteration


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
    """The protocol preset of a built-in family (never silently skipped); None for a user's family (Config
    defaults apply, with --set on top)."""
    name = check_env(env)
    return preset_path(name) if name in PRESET_FAMILIES else None


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
    try:  # a family without a horizon of its own needs --set horizon=N: said before creating anything too
        resolve_horizon(cfg.env, cfg.horizon)
    except ContractError as exc:
        raise RunError(str(exc)) from None
    if cfg.device != "cpu":  # a GPU that is not there: said before creating anything (torch only imported then)
        from metarl.trainer import resolve_device

        try:
            resolve_device(cfg.device)
        except ValueError as exc:
            raise RunError(str(exc)) from None
    kwargs = env_kwargs(cfg)
    if kwargs:  # settings the family may not take (frame_skip): also checked before creating anything
        try:
            make(cfg.env, **kwargs).close()
        except ValueError as exc:
            raise RunError(f"{exc}; leave {', '.join(sorted(kwargs))} null for this family") from None
    return cfg


# -- run directories ------------------------------------------------------------------------------------------

def default_run_dir(cfg: Config, root: str | os.PathLike = "runs") -> Path:
    """runs/<env>-<algo>-seed<N>-<YYYYmmdd-HHMMSS>, with characters unsafe in folder names replaced."""
    env = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.env).strip("-.") or "env"
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{env}-{cfg.algo}-seed{cfg.seed}-{stamp}"


def new_run_path(cfg: Config, run_dir: str | os.PathLike | None = None) -> Path:
    """Where a new run goes: `run_dir`, else a fresh default_run_dir; nothing is created."""
    if run_dir is None:
        base = default_run_dir(cfg)
        path, n = base, 1
        while path.exists():  # two runs started in the same second
            n += 1
            path = base.with_name(f"{base.name}-{n}")
    else:
        path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise RunError(f"--run-dir {str(path)!r} is a file, not a directory; choose another --run-dir")
    return path


def create_run(cfg: Config, run_dir: str | os.PathLike | None = None) -> Path:
    """Make a fresh run directory holding config.yaml; refuse to overwrite an existing run.

    The folder is locked while it is checked and written (kept by a caller that already holds it, as the CLI does
    from here to the end of training), so two processes never both start a run there.
    """
    path = new_run_path(cfg, run_dir)
    writable_dir(path)
    with run_lock(path):
        if any((path / name).exists() for name in (CHECKPOINT_FILE, METRICS_FILE, METRICS_ARCHIVE)):
            raise RunError(f"{str(path)!r} already holds a run; continue it with `metarl train --resume {path}` "
                           "or choose another --run-dir")
        save_config(cfg, path / CONFIG_FILE)
    return path


def writable_dir(path: Path, what: str = "") -> Path:
    """Create `path` (and its parents) if needed and check that a file can be written there; RunError if not.

    Run before any work, so a read-only folder or a full disk is one line at once, not a traceback later. `what`
    names what was to be written there, for the message.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-") as probe:
            probe.write(b"\0" * 65536)  # a full disk refuses data, not an empty file
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        cause = ("a file is in the way: a folder was expected" if isinstance(exc, (FileExistsError, NotADirectoryError))
                 else exc.strerror or str(exc))
        raise RunError(f"cannot write {what + ' ' if what else ''}to {str(path)!r} ({cause}); "
                       f"{_os_advice(exc)}") from None
    return path


def _os_advice(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "free some disk space or choose a folder on another disk"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make it writable (chmod u+w) or choose another folder"
    return "choose another folder"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[RunLock]:
    """Hold the run directory's one-writer lock for the block (re-entrant; metarl.common.lock); RunError if another
    process holds it or the folder cannot be written."""
    try:
        lock = RunLock(run_dir).acquire()
    except RunLocked as exc:
        raise RunError(str(exc)) from None
    except OSError as exc:
        raise RunError(f"cannot lock {str(run_dir)!r} for training ({exc.strerror or exc}); "
                       f"{_os_advice(exc)}") from None
    try:
        yield lock
    finally:
        lock.release()


def require_run_dir(run_dir: str | os.PathLike) -> Path:
    """`run_dir` as a Path if it is a run directory (a folder with config.yaml); RunError saying what it is if not."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"run directory {str(path)!r} does not exist; pass a folder written by `metarl train` "
                       f"(one holding {CONFIG_FILE} and {CHECKPOINT_FILE})")
    if not (path / CONFIG_FILE).is_file():
        raise RunError(f"{str(path)!r} has no {CONFIG_FILE}, so it is not a metarl run directory")
    return path


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
    folder = run_dir / KEPT_CHECKPOINTS_DIR
    folder.mkdir(exist_ok=True)
    path = folder / f"iteration-{iteration:06d}.pt"
    with replaced_atomically(path) as tmp:
        shutil.copyfile(run_dir / CHECKPOINT_FILE, tmp)
    return path


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


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """RUN_DIR/metrics.jsonl as a list of records; lines that are not JSON objects with an integer iteration (one
    cut short by a crash) are skipped; empty if the file does not exist yet. A null value (a non-finite number when
    written) is read back as NaN."""
    text = _metrics_text(Path(run_dir))
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("iteration"), int):
            records.append({k: math.nan if v is None else v for k, v in record.items()})
    return records


def _metrics_text(run_dir: Path) -> str:
    """metrics.jsonl's text, or a published run's metrics.jsonl.gz unpacked; '' when there is neither."""
    import gzip

    if (run_dir / METRICS_FILE).is_file():
        return (run_dir / METRICS_FILE).read_text(encoding="utf-8")
    if (run_dir / METRICS_ARCHIVE).is_file():
        return gzip.decompress((run_dir / METRICS_ARCHIVE).read_bytes()).decode("utf-8")
    return ""


def pack_metrics(run_dir: Path, target: Path | None = None) -> Path:
    """Write the run's metrics gzipped to `target` (default RUN_DIR/metrics.jsonl.gz), byte for byte the same for
    the same records (no time stamp in the header), atomically; returns the file."""
    import gzip

    target = target or run_dir / METRICS_ARCHIVE
    with replaced_atomically(target) as tmp:
        Path(tmp).write_bytes(gzip.compress(_metrics_text(run_dir).encode("utf-8"), compresslevel=9, mtime=0))
    return target


def unpack_metrics(run_dir: Path) -> None:
    """Before a published run is trained on: its metrics.jsonl.gz becomes metrics.jsonl again, to append to."""
    archive = run_dir / METRICS_ARCHIVE
    if archive.is_file() and not (run_dir / METRICS_FILE).exists():
        write_text(run_dir / METRICS_FILE, _metrics_text(run_dir))
        archive.unlink()


def truncate_metrics(path: Path, iteration: int, last_eval: int) -> None:
    """Drop metrics.jsonl lines the checkpoint does not cover (written after it, before a crash)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            it = int(record["iteration"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the crash
        is_eval = any(k.startswith("eval/") for k in record)
        if it < iteration or (it == iteration and (not is_eval or last_eval >= iteration)):
            kept.append(line)
    write_text(path, "".join(line + "\n" for line in kept))


# -- logging --------------------------------------------------------------------------------------------------

def hyperparameter_table(cfg: Config) -> str:
    """The config as a markdown table, for TensorBoard's text tab."""
    rows = ["| key | value |", "|---|---|"]
    rows += [f"| {key} | {value} |" for key, value in config_to_dict(cfg).items()]
    return "\n".join(rows)


class RunLog:
    """Writes each iteration's and evaluation's scalars to TensorBoard and to metrics.jsonl, identically."""

    def __init__(self, run_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides points at or after it, i.e. those a crash left past the checkpoint.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        self.jsonl = open(run_dir / METRICS_FILE, "a", encoding="utf-8")

    def hyperparameters(self, cfg: Config) -> None:
        self.writer.add_text("hyperparameters", hyperparameter_table(cfg), global_step=0)

    def scalars(self, iteration: int, env_steps: int, scalars: dict) -> None:
        """One metrics.jsonl line and one TensorBoard point per scalar, at x = env_steps."""
        record = {"iteration": iteration, "env_steps": env_steps, **scalars}
        self.jsonl.write(dumps(record) + "\n")  # strict JSON: a non-finite value is null
        self.jsonl.flush()
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=env_steps)

    def warning(self, iteration: int, env_steps: int, text: str) -> None:
        """A warning about the run: a metrics.jsonl line {"iteration", "env_steps", "warning"} and TensorBoard text."""
        self.jsonl.write(dumps({"iteration": iteration, "env_steps": env_steps, "warning": text}) + "\n")
        self.jsonl.flush()
        self.writer.add_text("warnings", text, global_step=env_steps)

    def iteration(self, metrics: dict) -> None:
        scalars = {k: v for k, v in metrics.items() if "/" in k}
        self.scalars(metrics["iteration"], metrics["env_steps"], scalars)

    def evaluation(self, iteration: int, env_steps: int, result: dict) -> None:
        self.scalars(iteration, env_steps, {f"eval/{k}": v for k, v in result.items()})

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
        self.jsonl.close()


# -- progress -------------------------------------------------------------------------------------------------

def progress_line(metrics: dict, total: int) -> str:
    """One plain, fixed-width summary line of an iteration (for logs that are not a terminal)."""
    return (f"iter {metrics['iteration']:>{len(str(total))}}/{total}  env steps {metrics['env_steps']:>11,}  "
            f"return pre {metrics['returns/pre_adaptation']:9.2f} post {metrics['returns/post_adaptation']:9.2f}  "
            f"kl {metrics.get('trpo/kl', metrics.get('promp/kl', float('nan'))):.4f}  {metrics['time/iteration_s']:6.2f} s/it  "
            f"{metrics['time/env_steps_per_s']:>9,.0f} steps/s")


def eval_line(iteration: int, result: dict) -> str:
    steps = sorted(int(k.rsplit("_", 1)[1]) for k in result if not k.endswith("_std"))
    returns = "  ".join(f"{s}: {result[f'return_step_{s}']:.2f}" for s in steps)
    return f"eval at iter {iteration}: held-out return by adaptation steps  {returns}"


class Progress:
    """A tqdm bar on a terminal; otherwise a plain line every `every` iterations, the first and the last."""

    def __init__(self, total: int, initial: int, bar: bool, every: int = 10):
        self.total, self.every, self.first = total, every, initial + 1
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="it", desc="meta-training", dynamic_ncols=True)

    def update(self, metrics: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"post-adaptation return {metrics['returns/post_adaptation']:.2f}, "
                                     f"{metrics['time/env_steps_per_s']:,.0f} env steps/s", refresh=False)
            self.bar.update(1)
            return
        it = metrics["iteration"]
        if it % self.every == 0 or it in (self.first, self.total):
            print(progress_line(metrics, self.total), flush=True)

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, so an interrupt never lands inside a log or checkpoint write
    (TensorBoard's writer shares locks with its own thread); a signal that came meanwhile is delivered at the end.

    The signals are recorded by a handler, not blocked with a signal mask: a mask covers the calling thread only, so
    a kill(2) lands on another thread (TensorBoard's, torch's) and Python still runs its handler in the main thread
    at once. Under load that raised KeyboardInterrupt inside the block: the checkpoint fell one iteration behind
    metrics.jsonl and the run took about two minutes to exit (TensorBoard's writer thread, whose flush interval is
    120 s)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, frame: caught.append(signum)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: a handler set outside Python, which we cannot restore
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if caught:  # delivered again, now to the handlers the caller had (KeyboardInterrupt, or the default action)
            signal.raise_signal(caught[0])


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (e.g. a job scheduler stopping us) like Ctrl-C, so it also saves a checkpoint."""
    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- training -------------------------------------------------------------------------------------------------

def train(run_dir: Path, cfg: Config, ckpt: dict | None = None, bar: bool | None = None,
          world: World | None = None) -> dict:
    """Train to cfg.iterations from scratch or from `ckpt`, logging, evaluating and checkpointing as configured.

    Returns the last iteration's metrics ({} if none ran). The run directory is locked for the whole call (one
    writer). On Ctrl-C/SIGTERM, or any error, it saves the last completed iteration (and raises Interrupted for
    the former); a diverged run (metarl.divergence) saves its last good iteration and raises RunDiverged.
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


# -- evaluation of a saved run --------------------------------------------------------------------------------

@dataclass
class EvalReport:
    """What `metarl eval` prints and writes to eval.json."""

    data: dict

    def table(self) -> str:
        d, returns = self.data, self.data["returns"]
        lines = [f"{d['env']} / {d['algo']} / seed {d['seed']}: checkpoint at iteration {d['iteration']} "
                 f"({d['env_steps']:,} env steps)",
                 f"{d['tasks']} held-out tasks x {d['episodes']} episodes, horizon {d['horizon']}",
                 "", f"{'steps':>5}  {'mean return':>12}  {'std over tasks':>14}"]
        for step in range(d["steps"] + 1):
            lines.append(f"{step:>5}  {returns[f'return_step_{step}']:>12.2f}  "
                         f"{returns[f'return_step_{step}_std']:>14.2f}")
        return "\n".join(lines)


def default_eval_path(run_dir: Path, checkpoint: str | os.PathLike | None = None) -> Path:
    """Where `metarl eval` writes by default: RUN_DIR/eval.json, or CHECKPOINT.eval.json for a kept snapshot (so
    evaluating a snapshot never replaces the run's own report)."""
    return run_dir / EVAL_FILE if checkpoint is None else Path(checkpoint).with_suffix(".eval.json")


# What one evaluation may ask: far beyond any protocol (3 steps, 40 tasks x 20 episodes), below hours of work
MAX_EVAL_STEPS = 100
MAX_EVAL_ENV_STEPS = 10**9


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


def recorded_setup(run_dir: Path, eval_file: Path | None = None) -> dict | None:
    """The set-up that wrote the run's checkpoint: its last sitting's (setup.json), else that of an earlier
    evaluation (`eval_file`'s), else None (a run from before set-ups were recorded)."""
    for path, read in ((run_dir / SETUP_FILE, lambda d: d["sittings"][-1]), (eval_file, lambda d: d["setup"])):
        if path is not None and Path(path).is_file():
            try:
                return read(json.loads(Path(path).read_text(encoding="utf-8")))
            except (ValueError, KeyError, TypeError, IndexError):
                continue
    return None


def check_evaluation_size(cfg: Config, tasks: int, steps: int, episodes: int) -> None:
    """Refuse an evaluation no one means (a typo's 99999999 steps) with a one-line RunError naming what is allowed."""
    if steps > MAX_EVAL_STEPS:
        raise RunError(f"--steps {steps} is more adaptation steps than an evaluation takes; allowed: 0 to "
                       f"{MAX_EVAL_STEPS} (the protocol's is {cfg.eval_steps})")
    work = tasks * episodes * (steps + 1) * resolve_horizon(cfg.env, cfg.horizon)
    if work > MAX_EVAL_ENV_STEPS:
        raise RunError(f"an evaluation of {tasks} tasks x {episodes} episodes x {steps + 1} step(s) is {work:,} env "
                       f"steps, over the {MAX_EVAL_ENV_STEPS:,} allowed (hours of simulation); ask for fewer")


def evaluate_run(run_dir: str | os.PathLike, tasks: int | None = None, steps: int | None = None,
                 episodes: int | None = None, out: str | os.PathLike | None = None,
                 checkpoint: str | os.PathLike | None = None, speed: dict | None = None) -> EvalReport:
    """Evaluate a run's latest checkpoint (or `checkpoint`, a kept snapshot) on held-out tasks and write the report
    to `out` (default: RUN_DIR/eval.json, or beside `checkpoint` as its name with .eval.json). `speed`: settings of
    speed and disk use for this process (e.g. {"device": "cpu"} for a run trained on a GPU); config.yaml is unchanged."""
    speed = speed_settings(speed, "for an evaluation")
    path, cfg, _ = load_run(run_dir, checkpoint)  # checked before anything is created
    out = Path(out) if out is not None else default_eval_path(path, checkpoint)
    writable_dir(out.parent, "the evaluation report")  # before evaluating, so a bad --out or a read-only run directory fails at once
    tasks = tasks or cfg.eval_tasks
    steps = cfg.eval_steps if steps is None else steps
    episodes = episodes or cfg.eval_episodes_per_task
    check_evaluation_size(cfg, tasks, steps, episodes)
    from metarl.common import provenance

    here = provenance.setup()
    differ = provenance.differences(recorded_setup(path, out), here)
    if differ:  # MuJoCo and the BLAS kernels repeat bit for bit only on the same versions and vector features
        print(f"note: evaluating on another set-up than the one that wrote {path.name} ({'; '.join(differ)}): the "
              "returns may differ from its figures in the last digits", file=sys.stderr)
    trainer = load_trainer(path, checkpoint, speed)
    start = time.perf_counter()

    def progress(step: int, mean: float) -> None:  # one line per adaptation step, so a long evaluation shows
        print(f"eval: return after {step} of {steps} adaptation step{'s' * (steps != 1)}: {mean:.2f} "
              f"({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    try:
        returns = trainer.evaluate(num_tasks=tasks, steps=steps, episodes_per_task=episodes, per_task=True,
                                   progress=progress)
        per_task = returns.pop("per_task")
    finally:
        trainer.close()
    report = EvalReport({"env": cfg.env, "algo": cfg.algo, "seed": cfg.seed, "iteration": trainer.iteration,
                         "env_steps": trainer.env_steps, "horizon": trainer.horizon, "tasks": tasks,
                         "steps": steps, "episodes": episodes, "eval_seed": cfg.eval_seed, "returns": returns,
                         "per_task": per_task, "setup": here})
    try:
        write_json(out, report.data)
    except OSError as exc:
        raise RunError(f"cannot write the evaluation report to {out}: {exc.strerror or exc}") from exc
    return report
