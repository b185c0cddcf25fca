"""Bad files in a data set read from disk: skipped and counted, or (``strict=true``) a stop.

A file that cannot be decoded (truncated, corrupt, not an image) is replaced by the next readable
sample of the data set, label included, so batches keep their shape and stay a function of
(seed, step); each bad file is logged once per process with the running count. Files with a
non-image extension in a class folder are left out when the data set is listed, and counted.
With ``strict=true`` in the spec either case stops the run with the file's name.
"""

from __future__ import annotations

import logging
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


def read_or_substitute(ds: DiskImages, index: int) -> tuple[torch.Tensor, int]:
    """``(image, label)`` of sample ``index``, or of the next readable sample if it is bad."""
    for k in range(len(ds)):
        j = (index + k) % len(ds)
        try:
            return ds.image(j), int(ds.labels[j])
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
