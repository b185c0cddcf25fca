"""Rank-aware, atomic file output.

Every file a run writes goes through here: it is written to a temporary file in the same folder
and renamed over the target, so a crash never leaves a half-written checkpoint or result, and
only the main process (rank 0 under torchrun) writes at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

import mmt_ard


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def _atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    target = Path(path)
    if not is_main_process():  # under torchrun only rank 0 writes
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` that never leaves a partial file behind."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def code_version() -> dict[str, str]:
    """Package version and, when run from a git checkout, the commit (``+dirty`` if modified)."""
    info = {"mmt_ard": str(mmt_ard.__version__), "torch": str(torch.__version__)}
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        info["git"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info
