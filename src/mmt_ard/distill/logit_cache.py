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
stale is ever read. A row's flag reaches the disk only after its logits have (:meth:`CleanLogitCache.flush`),
so a run killed mid-write, or a machine that loses power, leaves that row to be recomputed.

Under ``torchrun`` the ranks fill one cache together: each step's rows are gathered from every rank
and every rank stores all of them (:meth:`CleanLogitCache.exchange`), so from the second epoch on
every rank's lookups hit, whether the ranks share the cache directory (one node, a shared file
system) or each has its own (nodes with local disks). The exchange costs one all-gather of the
step's logits (B x C floats) while some row is missing on some rank, and nothing after.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mmt_ard import distributed
from mmt_ard.io import atomic_write_text
from mmt_ard.models.clip import ZeroShotClassifier
from mmt_ard.models.zeroshot import update_with_tensors

log = logging.getLogger(__name__)

FORMAT = "clean-logits-v2"  # v2: logits and flags in one file, flags durable after their logits
FILE_NAME = "clean-logits.bin"


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
    """Memory-mapped (N, C) float32 logits and (N,) filled flags in one file in ``directory``.

    One file set per cache, whatever the world size: every rank stores every row of the global
    batch (rows are exchanged between ranks, :meth:`exchange`), so each rank's files hold the whole
    data set after one epoch, on storage the ranks share or not. Several processes may open, fill
    and read one cache at the same time: the files are created under unique temporary names and
    linked into place (the first link wins, the others open the winner's), every writer writes a
    row's logits (equal to rounding where they came from batches of other shapes), and a row's flag is set only after its logits are on disk (:meth:`flush`),
    so a reader never sees a flag without its logits, after a crash or a power loss included.
    """

    FLUSH_SECONDS = 30.0  # pending flags become durable (and visible to other processes) this often

    def __init__(self, directory: Path, n: int, num_classes: int) -> None:
        self.directory = directory
        self.n, self.num_classes = n, num_classes
        # one file: logits (N, C) float32, then flags (N,) uint8, so both always come from the same file
        path = self._create(directory / FILE_NAME, n * num_classes * 4 + n)
        self.logits = np.memmap(path, dtype=np.float32, mode="r+", shape=(n, num_classes))
        self.filled = np.memmap(path, dtype=np.uint8, mode="r+", shape=(n,), offset=n * num_classes * 4)
        self.hits = 0
        self.misses = 0
        self.last_hit_rate = 0.0  # of the last lookup
        self._pending: list[tuple[np.ndarray, torch.Tensor, torch.cuda.Event | None]] = []
        self._written = np.zeros(n, dtype=bool)  # rows this process wrote whose flags are not yet on disk
        self._last_flush = time.monotonic()
        # the rows every rank holds, identical on all ranks: decides the collective row exchange
        self.known = distributed.all_ranks_have(torch.from_numpy(self.filled[:].astype(bool))).numpy()

    @staticmethod
    def _create(path: Path, size: int) -> Path:
        """``path`` of ``size`` bytes, created whole under a unique name and linked in (the first link wins).

        A file of another size (torn by a crash under an older version, or not this cache's) is
        replaced by a new one the same way; a process that still maps the old one writes logits and
        flags into it together, and nobody reads it any more.
        """
        if path.is_file() and path.stat().st_size == size:
            return path
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.ftruncate(fd, size)  # sparse zeros: nothing filled yet
            os.close(fd)
            try:
                os.link(tmp, path)  # atomic: fails if the name exists
            except FileExistsError:
                # creators link only whole files: the right size means another process just made it (use
                # theirs; replacing it would leave that process writing into a file nobody reads)
                if path.stat().st_size != size:
                    log.warning("the cache file %s has the wrong size; starting it afresh", path)
                    os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return path

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
            atomic_write_text(
                meta,
                json.dumps(
                    {
                        "format": FORMAT,
                        "teacher": teacher.clip.arch,
                        "data": data_fingerprint,
                        "n": n,
                        "classes": teacher.num_classes,
                        "precision": precision,
                    },
                    indent=2,
                )
                + "\n",
            )
        cache = cls(directory, n, teacher.num_classes)
        log.debug(
            "clean-teacher logits cache %s: %d of %d images already computed", directory, int(cache.filled.sum()), n
        )
        return cache

    def lookup(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached logits (B, C) float32 on the CPU (zeros where missing) and the hit mask (B,) bool."""
        self._write_pending()
        rows = idx.detach().cpu().numpy()
        filled = self.filled[rows].astype(bool) | self._written[rows]  # numpy throughout: no tensor read
        logits = torch.from_numpy(np.ascontiguousarray(self.logits[rows]))
        n_hit = int(filled.sum())
        hit = torch.from_numpy(filled)
        self.hits += n_hit
        self.misses += len(rows) - n_hit
        self.last_hit_rate = n_hit / max(len(rows), 1)
        return logits, hit

    @property
    def complete(self) -> bool:
        """Whether every rank holds every row (then no rows need exchanging); the same on every rank."""
        return bool(self.known.all())

    def exchange(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        """Store every rank's rows of this step (a collective under torchrun: all ranks call it together).

        ``idx`` (B,) and ``logits`` (B, C) are this rank's; rows every rank already holds are skipped.
        """
        all_idx = distributed.all_gather_rows(idx.to(logits.device)).cpu()
        all_logits = distributed.all_gather_rows(logits.detach().float())
        rows = all_idx.numpy()
        _, first = np.unique(rows, return_index=True)  # a row twice in a global batch: store it once
        new = first[~self.known[rows[first]]]
        if len(new):
            keep = torch.from_numpy(new)
            self.store(all_idx[keep], all_logits[keep.to(all_logits.device)])
        self.known[rows] = True

    def store(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        """Record ``logits`` (B, C) of images ``idx``; written to disk without waiting on the device."""
        rows = idx.detach().cpu().numpy()
        values = logits.detach().float()
        if distributed.world_size() == 1:
            self.known[rows] = True
        if values.device.type == "cuda":
            host = torch.empty(values.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(values, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._pending.append((rows, host, event))
        else:
            self._pending.append((rows, values.clone(), None))

    def _write_pending(self, periodic_flush: bool = True) -> None:
        for rows, host, event in self._pending:
            if event is not None:
                event.synchronize()  # recorded a step ago: long done
            self.logits[rows] = host.numpy()
            self._written[rows] = True  # seen by this process's lookups; the flag on disk waits for flush()
        self._pending.clear()
        if periodic_flush and self._written.any() and time.monotonic() - self._last_flush > self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write what is pending, make the logits durable, then their flags (never the other way round)."""
        self._write_pending(periodic_flush=False)
        self.logits.flush()  # msync: the logits reach the disk first ...
        rows = np.flatnonzero(self._written)
        if len(rows):
            self.filled[rows] = 1  # ... and only then the flags that say they are there
            self._written[rows] = False
        self.filled.flush()
        self._last_flush = time.monotonic()

    def forget(self) -> None:
        """Empty the cache (every flag cleared, on disk too): the bench's cold first-epoch step."""
        self._pending.clear()
        self._written[:] = False
        self.known[:] = False
        self.filled[:] = 0
        self.filled.flush()

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
