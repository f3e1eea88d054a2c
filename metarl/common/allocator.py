"""Keep freed memory in the process: glibc malloc settings that stop the update's page faults.

By default glibc hands large freed blocks back to the OS (blocks from 128 KiB up are mmap'ed and unmapped one by
one, and a free heap top beyond 128 KiB is trimmed; both thresholds adapt, but only upwards, and slowly). The TRPO
update allocates and frees the same few-megabyte activations for every chunk and every Fisher-vector product, so
each product faulted its memory in again: kernel page faults were about a seventh of the update's CPU time
(benchmarks/update_flops.py measures the update with and without). `keep_freed_memory` raises the mmap threshold
to glibc's maximum (32 MiB on 64-bit) and the trim threshold to 1 GiB through mallopt(3), so those blocks are
reused instead. Applied by the Trainer when `tune_allocator` is true (the default); a no-op elsewhere than glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling for it on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 2**30

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True if glibc took them (False: not glibc, nothing changed)."""
    global _applied
    if _applied is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
            _applied = False
        else:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                       TRIM_THRESHOLD))
    return _applied
