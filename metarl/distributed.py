"""Data-parallel meta-training over tasks on torch.distributed, launched by torchrun.

Everything expensive in a meta-iteration is a mean over the meta-batch's tasks, so each rank takes a contiguous
share of the tasks (`World.tasks`), samples, fits baselines and adapts them, and the meta-update sums each rank's
weighted share with one all-reduce per quantity (`World.mean`): TRPO's surrogate and gradient, every
Fisher-vector product, the line search's loss and KL; ProMP's gradient at each optimiser step. The samplers agree
once per batch on its length (`World.max`). Every rank draws the same task and env-seed streams and the action
noise of all the tasks (then keeps its rows), so a run's numbers do not depend on the number of ranks. Rank 0
alone writes the run directory and evaluates. Gloo on the CPU, NCCL where the device is a GPU.

    torchrun --standalone --nproc-per-node 2 -m metarl train --env nav2d --set sampler_threads=1 update_threads=1
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Collectives issued by this process and the bytes they carried (for the iteration's dist/ metrics and the scaling
# benchmark): all-reduces of the update and the sampler, broadcasts.
TRAFFIC = {"collectives": 0, "bytes": 0}
# A collective that waits longer than this (a rank hangs) ends the run; rank 0's evaluation fits in it. The
# environment variable METARL_DIST_TIMEOUT_S sets another.
TIMEOUT_S = 600
POLL_S = 2e-4  # how often a pending collective is checked (see _wait)


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one training (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run directory and evaluates."""
        return self.rank == 0

    def tasks(self, n: int) -> slice:
        """This rank's contiguous share of `n` tasks (the first n % size ranks get one more)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def mean(self, value: torch.Tensor, share: float) -> torch.Tensor:
        """The mean over all tasks of a quantity whose mean over this rank's tasks is `value`, `share` being this
        rank's fraction of the tasks: sum over ranks of share * value (itself when alone)."""
        if self.size == 1:
            return value
        import torch

        out = (value * share).detach().clone()
        device = out.device
        if dist_backend() == "gloo" and device.type != "cpu":
            out = out.cpu()
        _count(out)
        _wait(torch.distributed.all_reduce(out, async_op=True))
        return out.to(device)

    def max(self, value: int) -> int:
        """The largest `value` over the ranks (the steps a batch ran: its samplers stop together)."""
        if self.size == 1:
            return value
        import torch

        t = torch.tensor([value], dtype=torch.int64)
        _count(t)
        _wait(torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX, async_op=True))
        return int(t.item())

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (a run directory, a checkpoint)."""
        if self.size == 1:
            return obj
        import torch

        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def problem(world: World, cfg) -> str | None:
    """Why a run with `cfg` cannot train on `world`'s ranks (one line), or None."""
    if world.size > cfg.meta_batch_size:
        return (f"{world.size} ranks for a meta-batch of {cfg.meta_batch_size} tasks: each rank needs at least one "
                "task; launch at most meta_batch_size ranks")
    return None


def _wait(work) -> None:
    """Wait for a collective while staying responsive to signals: a blocking wait in C++ would hold off Python's
    SIGTERM handler, so torchrun, stopping the launch after a rank died, would have to kill this rank unannounced.
    Polling lets the interrupt save the checkpoint and say so; a failed collective raises here."""
    while not work.is_completed():
        time.sleep(POLL_S)
    work.wait()


def _count(t: torch.Tensor) -> None:
    TRAFFIC["collectives"] += 1
    TRAFFIC["bytes"] += t.numel() * t.element_size()


def traffic() -> dict:
    """A copy of TRAFFIC: collectives issued so far and their bytes."""
    return dict(TRAFFIC)


def dist_backend() -> str | None:
    """The process group's backend, None outside one."""
    import torch

    return torch.distributed.get_backend() if torch.distributed.is_initialized() else None


def launched_world() -> World:
    """The World torchrun describes in the environment (RANK, WORLD_SIZE), not yet joined; rank 0 of 1 otherwise
    (no torch import: a bad command line still fails at once)."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))


def join(world: World, device: str = "cpu", timeout_s: float | None = None) -> World:
    """Join the process group of a torchrun launch (gloo, or NCCL for a CUDA device); nothing when alone.
    `timeout_s`: the collectives' timeout, by default METARL_DIST_TIMEOUT_S or TIMEOUT_S."""
    import torch

    if timeout_s is None:
        timeout_s = float(os.environ.get("METARL_DIST_TIMEOUT_S", TIMEOUT_S))
    if world.size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        torch.distributed.init_process_group(backend, timeout=dt.timedelta(seconds=timeout_s))
    return world


def is_collective_failure(exc: BaseException) -> bool:
    """Whether an exception is torch.distributed's report of a failed collective (a peer gone, a timeout)."""
    import torch

    kinds = tuple(getattr(torch.distributed, name) for name in ("DistError", "DistBackendError") if
                  hasattr(torch.distributed, name))
    text = str(exc).lower()
    return isinstance(exc, kinds) or any(word in text for word in ("gloo", "nccl", "connection", "timed out",
                                                                    "timeout", "peer"))


def leave() -> None:
    """Leave the process group (at the end of a run)."""
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
