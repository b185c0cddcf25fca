"""Deterministic batches indexed by step.

The batch of step ``t`` depends only on (seed, t): epoch ``t // steps_per_epoch`` is a seeded
permutation of the dataset. Resuming at any step therefore sees exactly the batches an
uninterrupted run would, with no sampler state to save.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from mmt_ard.errors import ConfigError


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """Indices of the batch at ``step`` (full batches only; each epoch reshuffled)."""
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ConfigError(f"batch size {batch_size} is larger than the dataset ({n} samples); lower optim.batch_size")
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[k * batch_size : (k + 1) * batch_size]


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator for the randomness of one step (attack starts), reproducible on resume."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 17)


def labeled_batch(ds: Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, H, W) in [0, 1] and labels (B,); fast path for in-memory datasets."""
    images = getattr(ds, "images_uint8", None)
    if images is not None:
        return images[idx].float().div_(255), ds.labels[idx]  # type: ignore[attr-defined]
    items = [ds[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])
