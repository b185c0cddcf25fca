"""A data set's fingerprint: a hash of everything its images and labels depend on.

Used to key caches of per-image results (the clean teacher's logits, distill/logit_cache.py).
In-memory data sets (the built-in world) are hashed by content. Data read from disk are hashed
by their spec, the size and modification time of every file behind them and the transform that
decodes them, so editing, adding or removing a file, or changing the resolution, gives a new
fingerprint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def _source_files(dataset: Any) -> list[Path]:
    """The files a disk-backed data set reads (image files, or tar shards)."""
    return list(getattr(dataset, "files", None) or getattr(dataset, "shards", None) or [])


def data_fingerprint(dataset: Any) -> str:
    """A hex digest that changes whenever an image, a label or the transform of ``dataset`` does."""
    h = hashlib.sha256(f"{type(dataset).__name__}|{getattr(dataset, 'spec', '')}|{len(dataset)}".encode())
    h.update(dataset.labels.detach().cpu().contiguous().numpy().tobytes())
    images = getattr(dataset, "images_uint8", None)
    if images is not None:
        h.update(images.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()
    h.update(repr(getattr(dataset, "preprocess", None)).encode())
    for path in _source_files(dataset):
        stat = Path(path).stat()
        h.update(f"|{path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()
