"""Data-parallel training and evaluation under ``torchrun`` (one process per GPU, any number of nodes).

The design keeps a multi-process run equal to a single-process run with the same global batch:

* the global batch of step ``t`` is the same in every world size (data/batches.py); each rank
  takes its contiguous slice of it (:func:`rank_slice`), so ``optim.batch_size`` is the *global*
  batch and must be divisible by the number of processes;
* attack random starts are drawn from the step's generator as if for the whole global batch
  (:func:`skip_to_rank`), so a sample gets the same start whatever rank or world size it lands in;
* the student's gradients are averaged over ranks after ``backward`` (:func:`average_gradients`);
  the frozen teachers take part in no synchronization at all (they have no gradients);
* evaluation sets are sharded by rank (:func:`shard`) and hit counts summed (:func:`sum_counts`);
* the clean-teacher logit cache is filled with every rank's rows (:func:`all_gather_rows`), so
  each rank's cache holds the whole data set after one epoch, on shared storage or not.

Because the run's state (weights, optimizer, step) does not depend on the world size, ``--resume``
works with any number of processes. Only rank 0 writes files (see io.py). Outside ``torchrun``
(``WORLD_SIZE`` unset or 1) every function here is a no-op.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Iterable, Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset

from mmt_ard.errors import ConfigError

log = logging.getLogger(__name__)

_SKIP_CHUNK = 1 << 23  # floats drawn at a time when skipping a generator ahead (32 MiB)


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> torch.device:
    """Join the ``torchrun`` process group once (NCCL on GPUs, gloo on CPU); the device of this rank.

    On CUDA, each process takes the GPU ``LOCAL_RANK``. Multi-node runs need nothing more than
    torchrun's rendezvous (``--nnodes``, ``--rdzv_endpoint``). The group is destroyed at exit.
    """
    if _env_world_size() <= 1 or not dist.is_available():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # a dead peer must not hang the others forever: collectives fail after this many seconds
        timeout = timedelta(seconds=float(os.environ.get("MMT_ARD_DIST_TIMEOUT", "600")))
        dist.init_process_group(backend=backend, timeout=timeout)
        atexit.register(shutdown)
        log.info("rank %d of %d joined the process group (%s, %s)", rank(), world_size(), backend, device)
    return device


def shutdown() -> None:
    """Leave the process group (registered at exit by :func:`setup`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def rank_slice(indices: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous part of a global batch of indices (all of it in one process)."""
    world = world_size()
    if world == 1:
        return indices
    if len(indices) % world:
        raise ConfigError(
            f"the global batch optim.batch_size={len(indices)} does not split evenly over {world} "
            f"processes; make it a multiple of {world}"
        )
    per_rank = len(indices) // world
    return indices[rank() * per_rank : (rank() + 1) * per_rank]


def skip_to_rank(generator: torch.Generator, local: torch.Tensor) -> torch.Generator:
    """Advance ``generator`` past the uniform draws of the ranks before this one.

    PGD's L-inf random start draws one float per element; with every rank holding a batch shaped
    like ``local``, rank r skips ``r * local.numel()`` draws and then draws exactly what a single
    process would have drawn for its slice of the global batch. (L2 starts mix normal and
    uniform draws: there a sample's start depends on the world size.)
    """
    todo = rank() * local.numel()
    while todo > 0:
        n = min(todo, _SKIP_CHUNK)
        torch.rand(n, generator=generator)
        todo -= n
    return generator


def broadcast_parameters(params: Iterable[torch.Tensor]) -> None:
    """Make every rank start from rank 0's values (they should already agree; this enforces it)."""
    if not is_distributed():
        return
    for p in params:
        dist.broadcast(p.data, src=0)


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replace each gradient by its mean over ranks: one flat all-reduce per dtype and device."""
    if not is_distributed():
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (B, ...) stacked in rank order (world * B, ...), on ``t``'s device.

    Every rank must pass the same shape (the per-rank batch is the same on every rank).
    """
    if not is_distributed():
        return t
    local = t.detach().to(_collective_device())
    out = local.new_empty((world_size() * local.shape[0], *local.shape[1:]))
    dist.all_gather_into_tensor(out, local.contiguous())
    return out.to(t.device)


def all_ranks_have(mask: torch.Tensor) -> torch.Tensor:
    """The element-wise AND of a bool ``mask`` over ranks (what every rank has), on the CPU."""
    if not is_distributed():
        return mask
    t = mask.to(torch.int32).to(_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t.cpu().bool()


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each scalar averaged over ranks (for logging: every rank holds its own batch's terms)."""
    if not is_distributed() or not values:
        return values
    keys = sorted(values)
    device = _collective_device()
    stacked = torch.stack([values[k].detach().float().reshape(()).to(device) for k in keys])
    dist.all_reduce(stacked)
    stacked /= world_size()
    return {k: stacked[i].cpu() for i, k in enumerate(keys)}


def sum_counts(counts: Sequence[int]) -> list[int]:
    """Integer counts summed over ranks (evaluation hits and totals)."""
    if not is_distributed():
        return list(counts)
    device = _collective_device()
    t = torch.tensor(list(counts), dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return [int(v) for v in t.cpu()]


def shard(dataset: Dataset) -> Dataset:
    """This rank's share of an evaluation set: every ``world``-th sample starting at ``rank``."""
    if not is_distributed():
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))  # type: ignore[arg-type]


def peer_failure(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process died or timed out."""
    dist_error = getattr(dist, "DistError", None)
    return is_distributed() and (
        (dist_error is not None and isinstance(error, dist_error)) or any(text in str(error) for text in PEER_LOST)
    )


PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "timed out", "Timed out")
