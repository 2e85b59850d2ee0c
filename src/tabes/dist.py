"""Multi-process evaluation: shard inputs across ranks, gather results in input order.

Works under ``torchrun`` or ``accelerate launch`` (both set ``RANK``/``WORLD_SIZE``/
``MASTER_ADDR``/``MASTER_PORT``). The process group is started on first use with ``gloo`` on
CPU or ``nccl`` on CUDA. With one process everything is a no-op.
"""

from __future__ import annotations

import atexit
import os
from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size); starts the process group when launched with several processes."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        # tear the group down before the interpreter exits: gloo's threads left running at exit
        # can abort the process ("terminate called without an active exception")
        atexit.register(_shutdown)
    return dist.get_rank(), dist.get_world_size()


def _shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(items: list[Any]) -> list[Any]:
    """This rank's items: every world_size-th one, starting at the rank."""
    rank, size = world()
    return items[rank::size]


def gather(local: list[Any]) -> list[Any]:
    """Inverse of :func:`shard`: every rank gets all results, in the original input order."""
    rank, size = world()
    if size == 1:
        return local
    parts: list[list[Any]] = [[] for _ in range(size)]
    dist.all_gather_object(parts, local)
    return interleave(parts)


def interleave(parts: list[list[Any]]) -> list[Any]:
    """Rank-ordered shards back into input order: parts[r] holds items r, r + size, ..."""
    out = []
    for i in range(max((len(p) for p in parts), default=0)):
        out.extend(p[i] for p in parts if i < len(p))
    return out


def is_main() -> bool:
    """True on rank 0 (the rank that writes files and prints)."""
    return world()[0] == 0


def max_over_ranks(value: float) -> float:
    """The largest ``value`` over ranks (wall-clock of a sharded job)."""
    rank, size = world()
    if size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def world_size() -> int:
    """Number of processes (1 without torchrun / accelerate)."""
    return world()[1]


def barrier() -> None:
    """Wait for every rank (no-op with one process)."""
    if world()[1] > 1:
        dist.barrier()
