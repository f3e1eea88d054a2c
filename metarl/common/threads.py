"""How many torch threads the update may use now: fewer while other processes keep the machine's cores busy.

On a small machine two torch threads beside a busy process are several times slower than one (an OpenMP thread
waits for a sibling the scheduler has put aside), while on an idle machine two are faster. No fixed setting is
right for both (benchmarks/update_threads.py measures both), so the trainer asks `UpdateThreads.now()` before each
update: it measures the CPU time other processes used since the last call, system-wide busy time (/proc/stat)
minus this process's own (all its threads), and takes one thread per core those processes leave free, between 1 and
`update_threads`. Where /proc/stat cannot be read it keeps `update_threads`.
"""

from __future__ import annotations

import os
import time

BUSY_SHARE = 0.5  # another process using more than half a core takes that core away from the update


def _system_busy_s() -> float | None:
    """Seconds of CPU time all processes have used since boot (busy = total - idle - iowait), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class UpdateThreads:
    """The update's thread count, adapted to what other processes leave free (see the module docstring)."""

    def __init__(self, limit: int, adaptive: bool = True):
        self.limit, self.adaptive = limit, adaptive
        self.cores = os.cpu_count() or 1
        self._mark()

    def _mark(self) -> None:
        self._busy, self._own, self._wall = _system_busy_s(), _own_cpu_s(), time.monotonic()

    def others_cores(self) -> float | None:
        """Cores other processes kept busy, on average, since the last call (None if it cannot be measured)."""
        busy, own, wall = _system_busy_s(), _own_cpu_s(), time.monotonic()
        if busy is None or self._busy is None or wall <= self._wall:
            return None
        return max(0.0, ((busy - self._busy) - (own - self._own)) / (wall - self._wall))

    def now(self) -> int:
        """Threads for the update about to run: `limit`, less one per core other processes have been using."""
        if not self.adaptive or self.limit == 1:
            return self.limit
        others = self.others_cores()
        self._mark()
        if others is None:
            return self.limit
        taken = int(others + (1 - BUSY_SHARE))  # a core counts as taken from more than half a core's use
        return max(1, min(self.limit, self.cores - taken))
