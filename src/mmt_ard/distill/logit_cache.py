"""The clean teacher's logits per training image, computed once and kept on disk.

The clean teacher only ever sees clean training images, and the input pipeline is deterministic
(each model's evaluation transform, no augmentation: the paper's setting), so ``z_Torg(x_i)`` is
a fixed (C,) vector per training image ``i``. :class:`CleanLogitCache` stores those vectors in a
float32 memory-mapped file (N, C) with a filled flag per image; the first time an image comes
up its logits are computed and written, every later time (the next epoch, the next run, a
resumed run, another strategy distilled from the same teachers) they are read.

The cache key is a hash of everything the logits depend on: every weight of the teacher and its
zero-shot head, its input resolution and normalization, the data set's fingerprint (content or
files, and the transform) and the precision. Change any of them and a new cache starts; nothing
stale is ever read. A row's flag is set only after its logits are written, so a run killed
mid-write leaves that row to be recomputed. Under ``torchrun`` each rank keeps its own file
(``rank{r}of{w}``): ranks may sit on different machines that share the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from mmt_ard import distributed
from mmt_ard.io import atomic_write_text
from mmt_ard.models.clip import ZeroShotClassifier
from mmt_ard.models.zeroshot import update_with_tensors

log = logging.getLogger(__name__)

FORMAT = "clean-logits-v1"


def teacher_digest(teacher: ZeroShotClassifier) -> str:
    """A hash of every weight and buffer of ``teacher`` (head, normalization and size included)."""
    h = hashlib.sha256(f"{FORMAT}|{teacher.clip.arch}|{teacher.clip.image_size}|{teacher.scale}".encode())
    tensors = {f"model.{k}": v for k, v in teacher.clip.model.state_dict().items()}
    tensors.update(head=teacher.head, mean=teacher.clip.mean, std=teacher.clip.std)
    update_with_tensors(h, tensors)
    return h.hexdigest()


def cache_key(teacher: ZeroShotClassifier, data_fingerprint: str, precision: str) -> str:
    h = hashlib.sha256(teacher_digest(teacher).encode())
    h.update(f"|{data_fingerprint}|{precision}".encode())
    return h.hexdigest()[:32]


class CleanLogitCache:
    """Memory-mapped (N, C) float32 logits and (N,) filled flags in ``directory``."""

    def __init__(self, directory: Path, n: int, num_classes: int) -> None:
        self.directory = directory
        self.n, self.num_classes = n, num_classes
        suffix = f".rank{distributed.rank()}of{distributed.world_size()}" if distributed.world_size() > 1 else ""
        self.logits = self._open(directory / f"logits{suffix}.f32", np.float32, (n, num_classes))
        self.filled = self._open(directory / f"filled{suffix}.u8", np.uint8, (n,))
        self.hits = 0
        self.misses = 0
        self.last_hit_rate = 0.0  # of the last lookup
        self._pending: list[tuple[np.ndarray, torch.Tensor, torch.cuda.Event | None]] = []

    @staticmethod
    def _open(path: Path, dtype: type, shape: tuple[int, ...]) -> np.memmap:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not path.is_file() or path.stat().st_size != size:  # new, or torn by a crash while created
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                f.truncate(size)  # sparse zeros: nothing filled yet
            tmp.replace(path)
        return np.memmap(path, dtype=dtype, mode="r+", shape=shape)

    @classmethod
    def open(
        cls, root: Path, teacher: ZeroShotClassifier, data_fingerprint: str, n: int, precision: str
    ) -> CleanLogitCache:
        """The cache of ``teacher`` on a data set of ``n`` images with this fingerprint."""
        key = cache_key(teacher, data_fingerprint, precision)
        directory = Path(root) / key
        directory.mkdir(parents=True, exist_ok=True)
        meta = directory / "meta.json"
        if not meta.is_file() and distributed.rank() == 0:
            atomic_write_text(meta, json.dumps({
                "format": FORMAT, "teacher": teacher.clip.arch, "data": data_fingerprint, "n": n,
                "classes": teacher.num_classes, "precision": precision,
            }, indent=2) + "\n")
        cache = cls(directory, n, teacher.num_classes)
        log.info("clean-teacher logits cache %s: %d of %d images already computed",
                 directory, int(cache.filled.sum()), n)
        return cache

    def lookup(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached logits (B, C) float32 on the CPU (zeros where missing) and the hit mask (B,) bool."""
        self._write_pending()
        rows = idx.detach().cpu().numpy()
        filled = self.filled[rows].astype(bool)  # numpy throughout: no tensor is read on the host
        logits = torch.from_numpy(np.ascontiguousarray(self.logits[rows]))
        n_hit = int(filled.sum())
        hit = torch.from_numpy(filled)
        self.hits += n_hit
        self.misses += len(rows) - n_hit
        self.last_hit_rate = n_hit / max(len(rows), 1)
        return logits, hit

    def store(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        """Record ``logits`` (B, C) of images ``idx``; written to disk without waiting on the device."""
        rows = idx.detach().cpu().numpy()
        values = logits.detach().float()
        if values.device.type == "cuda":
            host = torch.empty(values.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append((rows, host, event))
        else:
            self._pending.append((rows, values.clone(), None))

    def _write_pending(self) -> None:
        for rows, host, event in self._pending:
            if event is not None:
                event.synchronize()  # recorded a step ago: long done
            self.logits[rows] = host.numpy()
            self.filled[rows] = 1  # after the logits: a torn write leaves the row unfilled
        self._pending.clear()

    def flush(self) -> None:
        """Write what is pending and push the files to disk."""
        self._write_pending()
        self.logits.flush()
        self.filled.flush()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
