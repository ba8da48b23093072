"""Training on several processes (``torchrun --nproc_per_node N``) with DistributedDataParallel.

:func:`join` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and
starts the process group (NCCL on CUDA, gloo on the CPU); without torchrun it is a
one-process :class:`Workers` and nothing else changes. :func:`rank_batches` is the
distributed sampler: every rank draws the same permutation of the epoch from the seed and
takes its own part of each global batch, so the ranks see disjoint samples and the
shuffle changes each epoch. With one process the batches are those of a plain run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from deeplesion.errors import DeepLesionError


class DistributedError(DeepLesionError, RuntimeError):
    """A multi-process launch that cannot be used (bad environment, devices, backend)."""


@dataclass(frozen=True)
class Workers:
    """This process's place in the run: ``rank`` of ``world_size``, GPU ``local_rank``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started_here: bool = False  #: this module started the process group (and ends it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, reports progress and computes FROC."""
        return self.rank == 0

    def device(self, requested: str) -> str:
        """``cuda`` means this process's GPU (``cuda:LOCAL_RANK``) in a distributed run."""
        dev = torch.device(requested)
        if self.distributed and dev.type == "cuda":
            return f"cuda:{self.local_rank}"
        return requested

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def leave(self) -> None:
        """End the process group if :func:`join` started it."""
        if self.started_here and dist.is_initialized():
            dist.destroy_process_group()


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise DistributedError(
            f"environment variable {name}={text!r}: expected an integer"
        ) from None


def join(device: str) -> Workers:
    """This process's :class:`Workers` from torchrun's environment, the group started."""
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return Workers()
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} outside 0..{world - 1} (WORLD_SIZE={world})")
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if local >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} CUDA "
                "device(s): start at most that many processes per node (--nproc_per_node)"
            )
        torch.cuda.set_device(local)
    if dist.is_initialized():
        return Workers(dist.get_rank(), dist.get_world_size(), local, started_here=False)
    backend = "nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"cannot start the {backend} process group: {exc}") from exc
    return Workers(rank, world, local, started_here=True)


def rank_batches(
    n_items: int,
    batch_size: int,
    batches_per_epoch: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> list[list[int]]:
    """Rank ``rank``'s ``batches_per_epoch`` batches of item indices for ``epoch``.

    The epoch's order is permutations of ``range(n_items)`` drawn from ``(seed, epoch)``
    (as many as fill ``batches_per_epoch * batch_size * world_size`` places); global batch
    ``i`` is the next ``batch_size * world_size`` places and rank ``r`` takes its ``r``-th
    ``batch_size`` of them.
    """
    rng = np.random.default_rng((seed, epoch))
    per_step = batch_size * world_size
    order: list[int] = []
    while len(order) < batches_per_epoch * per_step:
        order += rng.permutation(n_items).tolist()
    start = rank * batch_size
    return [
        order[i * per_step + start : i * per_step + start + batch_size]
        for i in range(batches_per_epoch)
    ]


def wrap(model: torch.nn.Module, workers: Workers, device: str) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when the run is distributed."""
    if not workers.distributed:
        return model
    ids = [torch.device(device).index] if torch.device(device).type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard(n_items: int, workers: Workers) -> range:
    """This rank's contiguous block of ``range(n_items)`` (blocks in rank order)."""
    size = -(-n_items // workers.world_size)
    return range(min(workers.rank * size, n_items), min((workers.rank + 1) * size, n_items))
