"""One writer per run directory: an exclusive lock on RUN_DIR/train.lock, held for the life of a training process.

The lock is the kernel's (flock(2)), so it is released on any exit of its holder, SIGKILL included: a run left by a
killed process is never locked out. The file records the holder (pid, host, start, command) so that a second writer
is refused with a line that names it; a holder that left without releasing (killed) is reported as stale when the
next writer takes over. Where the filesystem has no flock (some network mounts), the record alone decides: a lock
of a live process on this host, or of any process on another host, holds. Readers (`metarl eval`) never lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
from datetime import datetime
from pathlib import Path

LOCK_FILE = "train.lock"

_held: dict[Path, list] = {}  # resolved lock path -> [fd, depth, stale record]: the locks this process holds (re-entrant)
_guard = threading.Lock()


class RunLocked(Exception):
    """Another process holds the run directory; `holder` is its record (pid, host, started, command)."""

    def __init__(self, run_dir: Path, holder: dict):
        self.run_dir, self.holder = run_dir, holder
        pid = holder.get("pid", "?")
        who = (f"pid {pid} on host {holder.get('host', '?')}, started {holder.get('started', '?')}: "
               f"{holder.get('command', '?')}" if holder else "it is just finishing")
        super().__init__(f"{str(run_dir)!r} is being written by another training process ({who}); wait for it to "
                         f"finish, stop it (kill -INT {pid} saves a checkpoint), or choose another --run-dir")


def _record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["metarl" if i == 0 else a for i, a in enumerate(sys.argv)])}


def _read(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


def _alive(holder: dict) -> bool:
    """Whether the recorded holder may still run: a live pid on this host, or any holder on another host."""
    if holder.get("host") != socket.gethostname():
        return bool(holder)
    try:
        os.kill(int(holder["pid"]), 0)
    except (KeyError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


class RunLock:
    """Hold `run_dir`'s lock (re-entrant within a process); `stale` is the record a killed holder left, if any.

    Raises RunLocked when another process holds it, OSError when the folder cannot be written.
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self.path = (self.run_dir / LOCK_FILE).resolve()
        self.stale: dict = {}
        self._acquired = False

    def acquire(self) -> "RunLock":
        with _guard:
            if self.path in _held:
                _held[self.path][1] += 1
                self.stale = _held[self.path][2]
            else:
                _held[self.path] = [self._lock(), 1, self.stale]
        self._acquired = True
        return self

    def _lock(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            previous = _read(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLocked(self.run_dir, _read(fd)) from None
                if exc.errno != errno.ENOLCK:
                    raise
                if _alive(previous):  # no flock on this filesystem: the record decides
                    raise RunLocked(self.run_dir, previous) from None
            self.stale = previous  # a record left behind: its holder was killed (a clean exit empties it)
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(_record()) + "\n").encode(), 0)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def release(self) -> None:
        """Release one hold; the last one empties the record and drops the kernel lock (the file stays: removing
        it would let a waiter lock an unlinked file while a newcomer locks a new one)."""
        if not self._acquired:
            return
        self._acquired = False
        with _guard:
            entry = _held[self.path]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self.path]
                try:
                    os.ftruncate(entry[0], 0)
                finally:
                    os.close(entry[0])  # closing drops the flock

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

