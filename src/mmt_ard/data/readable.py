"""Bad files in a data set read from disk: skipped and counted, or (``strict=true``) a stop.

A file that cannot be decoded (truncated, corrupt, not an image) is replaced by the next readable
sample of the data set, label included, so batches keep their shape and stay a function of
(seed, step); each bad file is logged once per process with the running count. Files with a
non-image extension in a class folder are left out when the data set is listed, and counted.
With ``strict=true`` in the spec either case stops the run with the file's name.

Reading is told apart from decoding: an ``OSError`` while *reading* a file's bytes (an NFS hiccup,
EIO, too many open files) is retried with backoff (:func:`read_bytes`) before the file is called
bad; only a file that still cannot be read, or whose bytes do not decode, is substituted. Whoever
keeps per-image state (the clean-teacher logit cache) asks :func:`read_with_source` which sample
was really read, so a substitute's values are never stored under the bad image's index.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from mmt_ard.errors import UserError

log = logging.getLogger(__name__)


class UnreadableImage(UserError):
    """A file of the data set that cannot be decoded as an image."""


class DiskImages(Protocol):
    spec: str
    strict: bool
    skipped: set[int]
    labels: torch.Tensor

    def image(self, index: int) -> torch.Tensor: ...

    def __len__(self) -> int: ...


# errors that say the file itself is not there or not readable by us: retrying cannot help
PERMANENT = (errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP)
RETRY_DELAYS = (0.05, 0.2, 1.0, 3.0)  # seconds before each retry of a transient read error


def with_retries(read: Callable[[], bytes], what: str, delays: tuple[float, ...] | None = None) -> bytes:
    """``read()``, retried with backoff on a transient ``OSError``; the last error is raised."""
    delays = RETRY_DELAYS if delays is None else delays
    for attempt in range(len(delays) + 1):
        try:
            return read()
        except OSError as err:
            if err.errno in PERMANENT or attempt == len(delays):
                raise
            log.warning(
                "reading %s failed (%s); retry %d of %d in %.2f s", what, err, attempt + 1, len(delays), delays[attempt]
            )
            time.sleep(delays[attempt])
    raise AssertionError("unreachable")


def _read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def read_bytes(path: Path, delays: tuple[float, ...] | None = None) -> bytes:
    """The bytes of ``path``, retrying transient ``OSError``s with backoff (:func:`with_retries`)."""
    return with_retries(lambda: _read_file(path), str(path), delays)


def read_or_substitute(ds: DiskImages, index: int) -> tuple[torch.Tensor, int]:
    """``(image, label)`` of sample ``index``, or of the next readable sample if it is bad."""
    image, label, _ = read_with_source(ds, index)
    return image, label


def read_with_source(ds: DiskImages, index: int) -> tuple[torch.Tensor, int, int]:
    """``(image, label, source)``: sample ``index``, or the next readable one; ``source`` is the one read."""
    for k in range(len(ds)):
        j = (index + k) % len(ds)
        try:
            return ds.image(j), int(ds.labels[j]), j
        except UnreadableImage as err:
            if ds.strict:
                raise UserError(f"{err}; remove or replace the file (or drop strict=true to skip such files)") from None
            if j not in ds.skipped:
                ds.skipped.add(j)
                log.warning("skipping %s (%d bad file(s) skipped so far in %s)", err, len(ds.skipped), ds.spec)
    raise UserError(f"no file of data set {ds.spec!r} can be read as an image")


def strict_option(options: dict[str, Any], spec: str) -> bool:
    """The spec's ``strict=true|false`` option (default false)."""
    raw = str(options.get("strict", "false")).lower()
    if raw not in ("true", "false"):
        raise UserError(f"option strict={raw!r} in {spec!r} must be true or false")
    return raw == "true"


def report_non_images(skipped: list[str], strict: bool, root: object) -> None:
    """Left-out files with non-image extensions: a warning with the count, or an error when strict."""
    if not skipped:
        return
    if strict:
        raise UserError(f"{skipped[0]} is not an image file; move it out of {root} (or drop strict=true to skip it)")
    log.warning("left out %d non-image file(s) in %s (first: %s)", len(skipped), root, skipped[0])


class SourceIndexed:
    """A data set's samples as ``(image, label, source)``, ``source`` the index of the sample really read.

    For disk data sets that substitute bad files; for others ``source`` is the index asked for.
    """

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        if hasattr(self.ds, "skipped") and hasattr(self.ds, "image"):
            return read_with_source(self.ds, index)
        image, label = self.ds[index]
        return image, int(label), index
