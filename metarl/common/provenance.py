"""What a run or an evaluation ran on: the versions of metarl and of what it computes with, and the processor's vector
features.

MuJoCo's trajectories are bitwise repeatable only on the same MuJoCo version and the same processor features (its
documentation says so; AVX-512 alone changes them), and torch's and numpy's rounding can change between versions:
a published figure re-evaluated elsewhere may differ in its last digits. So every run directory records the set-up of
each sitting that trained it (setup.json) and every eval.json its own, and `metarl eval` says in one line where they
differ.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

# The processor features that change floating-point results (MuJoCo's and the BLAS kernels' code paths)
VECTOR_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
# The keys of setup() that decide whether a computation repeats bit for bit
COMPARED = ("metarl", "git_commit", "torch", "mujoco", "gymnasium", "numpy", "python", "machine", "vector_features")


@functools.cache
def git_commit() -> str | None:
    """The short commit of the checkout metarl runs from; None outside one (an installed package)."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parent,
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _cpuinfo(field: str) -> str | None:
    """The first `field` line of Linux's /proc/cpuinfo ('model name', 'flags'); None where it cannot be read."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(field)), None)


def vector_features(features: tuple[str, ...] = VECTOR_FEATURES) -> list[str]:
    """Which of `features` the processor has, as Linux reports them; empty where that cannot be read."""
    flags = set((_cpuinfo("flags") or "").split())
    return [f for f in features if f in flags]


def cpu_model() -> str:
    """The processor's model name (Linux's /proc/cpuinfo, else what platform says)."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


def setup() -> dict:
    """This process's set-up: versions, machine architecture and vector features (the keys COMPARED)."""
    import gymnasium
    import mujoco
    import numpy
    import torch

    import metarl

    return {"metarl": metarl.__version__, "git_commit": git_commit(), "torch": torch.__version__,
            "mujoco": mujoco.__version__, "gymnasium": gymnasium.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "vector_features": vector_features()}


def differences(recorded: dict | None, current: dict) -> list[str]:
    """'mujoco 3.3.7 -> 4.0.1'-style lines for the COMPARED keys on which two set-ups differ; none where `recorded`
    is unknown (a run written before set-ups were recorded)."""
    if not recorded:
        return []

    def text(value) -> str:
        return ("+".join(value) or "none") if isinstance(value, list) else str(value)

    return [f"{key} {text(recorded.get(key))} -> {text(current.get(key))}" for key in COMPARED
            if key in recorded and recorded.get(key) != current.get(key)]


def machine(**extra) -> dict:
    """The machine a benchmark measured on, as its results record it: processor, its vector features (AVX-512 and
    bfloat16 units change timings by about 2x), core count and the versions that compute; `extra` adds to it."""
    import mujoco
    import numpy
    import torch

    return {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "cpu_features": vector_features(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "mujoco": mujoco.__version__, **extra}


def machine_line(m: dict) -> str:
    """One line naming a recorded machine ('AMD EPYC 7B13, 2 CPUs, vector units sse4_2+avx+avx2+fma (no AVX-512),
    torch 2.13.0+cpu, MuJoCo 4.0.1'), from machine() or the fewer keys of older results."""
    cpus = m.get("cpus", m.get("cpu_count"))
    parts = [m.get("cpu") or m.get("processor") or "a CPU", f"{cpus} CPUs"]
    if "cpu_features" in m:
        features = m["cpu_features"]
        avx512 = "" if "avx512f" in features else " (no AVX-512)"
        parts.append(f"vector units {'+'.join(features) or 'none'}{avx512}")
    parts += [f"{name} {m[key]}" for key, name in (("torch", "torch"), ("mujoco", "MuJoCo"), ("jax", "jax"))
              if key in m]
    return ", ".join(parts)
