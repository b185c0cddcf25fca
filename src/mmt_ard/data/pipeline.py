"""Input pipelines: each model's own preprocessing, and step-indexed batches that keep a GPU busy.

* :class:`Preprocess` is open_clip's evaluation transform for a model (resize mode, size,
  interpolation, centre crop; no augmentation) without the normalization, which the models do
  themselves. Training and evaluation use the same one, as in the paper's setting.
* :class:`StepBatchSampler` yields, for steps ``start, start+1, ...``, this rank's slice of the
  global batch of each step (data/batches.py): the order depends only on (seed, step), so a
  resumed run, in any number of processes, reads exactly the images an uninterrupted one would.
* :class:`StepBatches` feeds the training loop: in-memory data sets are indexed directly; data
  read from disk (image folders, tar shards) go through a DataLoader with worker processes,
  pinned memory, prefetching and persistent workers (:class:`LoaderConfig`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import open_clip
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import Compose, Normalize

from mmt_ard.data.batches import batch_indices, labeled_batch
from mmt_ard.data.readable import SourceIndexed
from mmt_ard.devices import to_device
from mmt_ard.distributed import rank_slice
from mmt_ard.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocess:
    """How a PIL image becomes a (3, size, size) float tensor in [0, 1] (open_clip's eval transform)."""

    size: int = 224
    interpolation: str = "bicubic"  # open_clip: bicubic | bilinear | random
    resize_mode: str = "shortest"  # open_clip: shortest (resize + centre crop) | longest | squash

    def transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """open_clip's own eval pipeline for these settings, less its Normalize (the models normalize)."""
        full = open_clip.image_transform(
            self.size, is_train=False, resize_mode=self.resize_mode, interpolation=self.interpolation
        )
        return Compose([t for t in full.transforms if not isinstance(t, Normalize)])


def model_preprocess(model: torch.nn.Module) -> Preprocess:
    """The :class:`Preprocess` of an open_clip model (or a PixelCLIP wrapping one)."""
    cfg = open_clip.get_model_preprocess_cfg(getattr(model, "model", model))
    size = cfg.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return Preprocess(size, cfg.get("interpolation") or "bicubic", cfg.get("resize_mode") or "shortest")


def use_model_preprocess(dataset: Any, model: torch.nn.Module) -> None:
    """Make a disk-backed data set decode images the way ``model`` expects (no-op for in-memory ones)."""
    setter = getattr(dataset, "set_preprocess", None)
    if setter is not None:
        setter(model_preprocess(model))


@dataclass
class LoaderConfig:
    """DataLoader settings for data read from disk (image folders, tar shards, clip_benchmark sets)."""

    workers: int = 0  # decoding processes per GPU; 0 decodes in the training process
    pin_memory: bool = True  # page-locked host batches for asynchronous copies (CUDA only)
    prefetch_factor: int = 2  # batches each worker prepares ahead
    persistent_workers: bool = True  # keep workers alive between iterations

    def validate(self) -> None:
        if self.workers < 0 or self.prefetch_factor < 1:
            raise ConfigError("loop.data.workers must be >= 0 and loop.data.prefetch_factor >= 1")


class StepBatchSampler(Sampler[list[int]]):
    """This rank's indices of the batches of steps ``start, start + 1, ...`` (endless)."""

    def __init__(self, n: int, global_batch: int, seed: int, start: int = 0) -> None:
        self.n, self.global_batch, self.seed, self.start = n, global_batch, seed, start

    def __len__(self) -> int:
        return 2**62  # endless: the training loop decides when to stop

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start
        while True:
            yield rank_slice(batch_indices(self.n, self.global_batch, self.seed, step)).tolist()
            step += 1


def data_loader(dataset: Dataset, sampler: Sampler, cfg: LoaderConfig, device: torch.device) -> DataLoader:
    """A DataLoader over ``sampler``'s batches with ``cfg``'s workers, pinning and prefetching."""
    workers = cfg.workers
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=cfg.pin_memory and device.type == "cuda",
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
        persistent_workers=cfg.persistent_workers and workers > 0,
    )


class StepBatches:
    """``step -> (images (B, 3, H, W), labels (B,))`` on ``device``, B the per-rank batch.

    With ``with_index=True`` a third element holds the data set indices (B,) int64 of the batch
    (on the CPU), for per-image caches: for data read from disk, the indices of the samples really
    read (a bad file's substitute carries its own index, see data/readable.py). Calls with consecutive steps stream from one DataLoader;
    a jump (the first call, a resume) restarts the sampler at that step. On a GPU the batch is
    copied from page-locked memory without blocking the host.
    """

    def __init__(
        self,
        dataset: Dataset,
        global_batch: int,
        seed: int,
        device: torch.device,
        cfg: LoaderConfig | None = None,
        with_index: bool = False,
    ) -> None:
        self.dataset, self.global_batch, self.seed, self.device = dataset, global_batch, seed, device
        self.with_index = with_index
        self.cfg = cfg or LoaderConfig()
        self.cfg.validate()
        self.in_memory = getattr(dataset, "images_uint8", None) is not None
        self._sampler = StepBatchSampler(len(dataset), global_batch, seed)  # type: ignore[arg-type]
        self._loader: DataLoader | None = None
        self._it: Iterator[Any] | None = None
        self._next = -1

    def __call__(self, step: int) -> tuple[torch.Tensor, ...]:
        idx = None
        if self.in_memory:  # the sampler's indices of this step, recomputed
            idx = rank_slice(batch_indices(len(self.dataset), self.global_batch, self.seed, step))  # type: ignore[arg-type]
            x, y = labeled_batch(self.dataset, idx)
        else:
            if self._it is None or step != self._next:
                self._sampler.start = step
                # with indices: those of the samples really read (a bad file's substitute has its own)
                source = SourceIndexed(self.dataset) if self.with_index else self.dataset
                self._loader = self._loader or data_loader(source, self._sampler, self.cfg, self.device)  # type: ignore[arg-type]
                self._it = iter(self._loader)
            x, y, *rest = next(self._it)
            idx = rest[0] if rest else None
            self._next = step + 1
        batch = (to_device(x, self.device), to_device(y, self.device))
        return (*batch, idx) if self.with_index else batch
