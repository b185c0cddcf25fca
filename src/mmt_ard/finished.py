"""Finished work kept on disk and reused while nothing it depends on has changed.

One mechanism for every "do it once" over finished results: the demo's evaluations and its protocol
gap, the experiment store's evaluations and runs (``summary.json`` + ``experiment-key.json``), and
the key of ``mmt-ard evaluate``'s resumable AutoAttack state (:func:`digest`). A piece of work is a
JSON result plus the *key* it was computed under (configs, model specs, :func:`file_stamp` of every
input file); it is reused only when the stored key equals the key of the request. (A training
stage's own folder is reused by its run folder's ``config.yaml``, which resume checks as well.)

The result is written first and the key last, both atomically: a crash between the two leaves a
result without its key, which is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmt_ard.io import atomic_write_json

__all__ = ["FinishedWork", "digest", "file_stamp"]

log = logging.getLogger(__name__)


def file_stamp(path: str | Path | None) -> list[Any]:
    """``[path, size, mtime_ns]`` of an input file (zeros when it does not exist): a changed file changes the key."""
    if path is None:
        return [None, 0, 0]
    p = Path(path)
    stat = p.stat() if p.is_file() else None
    return [str(p), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0]


def _normal(key: Any) -> Any:
    """The key as JSON reads it back (tuples become lists, keys strings), so a stored key compares equal."""
    return json.loads(json.dumps(key, sort_keys=True, default=str))


def digest(key: Any, length: int = 12) -> str:
    """A short, stable hash of a JSON-able key (for folder and file names)."""
    return hashlib.sha256(json.dumps(_normal(key), sort_keys=True).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class FinishedWork:
    """A JSON ``result`` file and the ``key_file`` holding the key it was computed under.

    :meth:`named` puts the key's digest into the result's file name instead (many results in one
    folder, no key file): a different key is a different file.
    """

    result: Path
    key: Any
    key_file: Path | None = None

    @classmethod
    def named(cls, folder: str | Path, stem: str, key: Any) -> FinishedWork:
        """``folder/STEM-DIGEST.json``: the file name carries the key."""
        return cls(Path(folder) / f"{stem}-{digest(key)}.json", key)

    def done(self) -> bool:
        """Whether the result exists and was computed under this key."""
        if not self.result.is_file():
            return False
        if self.key_file is None:
            return True
        if not self.key_file.is_file():
            return False
        try:
            return json.loads(self.key_file.read_text()) == _normal(self.key)
        except (OSError, ValueError):  # an unreadable key is a key that does not match
            return False

    def load(self) -> Any | None:
        """The stored result when :meth:`done`, else ``None``."""
        return json.loads(self.result.read_text()) if self.done() else None

    def save(self, value: Any) -> Any:
        """Write the result, then its key; returns ``value``."""
        atomic_write_json(self.result, value)
        self.mark_done()
        return value

    def mark_done(self) -> None:
        """Record the key for a result someone else wrote (e.g. a training run's ``summary.json``)."""
        if self.key_file is not None:
            atomic_write_json(self.key_file, _normal(self.key))
