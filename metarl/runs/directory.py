"""Run directories: where a run goes, creating it (never over another run), writability and the one-writer lock."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Iterator

from metarl.common.lock import RunLock, RunLocked
from metarl.config import Config, save_config
from metarl.runs.layout import CHECKPOINT_FILE, CONFIG_FILE, METRICS_ARCHIVE, METRICS_FILE, RunError

# -- run directories ------------------------------------------------------------------------------------------

def file_safe(name: str) -> str:
    """A family's name as part of a file or folder name: characters unsafe there (a module path's ':', a gymnasium
    id's '/', Meta-World's metaworld-ml1:reach) become '-'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "env"


def default_run_dir(cfg: Config, root: str | os.PathLike = "runs") -> Path:
    """runs/<env>-<algo>-seed<N>-<YYYYmmdd-HHMMSS>, with characters unsafe in folder names replaced."""
    env = file_safe(cfg.env)
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
