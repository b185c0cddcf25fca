"""Zero-shot heads: class names x prompt templates -> averaged, normalized text embeddings.

Heads are computed once with the model's own frozen text encoder and cached in memory and on
disk. The cache key is a hash of the text tower's weights (not a path or name, which can lie)
plus the class names and templates, so a cached head is always the head of that exact model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mmt_ard.models.clip import PixelCLIP

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$MMT_ARD_CACHE`` or ``~/.cache/mmt_ard``."""
    return Path(os.environ.get("MMT_ARD_CACHE", Path.home() / ".cache" / "mmt_ard"))


def update_with_tensors(h: hashlib._Hash, tensors: dict[str, torch.Tensor]) -> None:
    """Feed every ``name`` and the raw bytes of its tensor to ``h``, in name order."""
    for name, tensor in sorted(tensors.items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def text_tower_digest(clip: PixelCLIP) -> str:
    """A hash of every non-vision weight: the identity of the model's text side."""
    h = hashlib.sha256(clip.arch.encode())
    update_with_tensors(h, {k: v for k, v in clip.model.state_dict().items() if not k.startswith("visual.")})
    return h.hexdigest()[:24]


class TextHeadCache:
    """Memory + disk cache of zero-shot heads; ``directory=None`` keeps it in memory only."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, torch.Tensor] = {}

    def key(self, clip: PixelCLIP, classnames: Sequence[str], templates: Sequence[str]) -> str:
        h = hashlib.sha256(text_tower_digest(clip).encode())
        h.update("\x1f".join(classnames).encode())
        h.update(b"\x1e")
        h.update("\x1f".join(templates).encode())
        return h.hexdigest()[:32]

    def head(self, clip: PixelCLIP, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        """The (C, D) head of ``clip`` for these classes, computed at most once."""
        key = self.key(clip, classnames, templates)
        if key in self._memory:
            return self._memory[key]
        path = self.directory / "heads" / f"{key}.pt" if self.directory else None
        head = self._read(path)
        if head is None:
            head = build_text_head(clip, classnames, templates)
            self._write(path, head)
        self._memory[key] = head
        return head

    @staticmethod
    def _read(path: Path | None) -> torch.Tensor | None:
        if path is None or not path.is_file():
            return None
        try:
            head = torch.load(path, map_location="cpu", weights_only=True)
            return head if isinstance(head, torch.Tensor) else None
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed, never fatal
            log.warning("ignoring unreadable text-head cache entry %s", path)
            return None

    @staticmethod
    def _write(path: Path | None, head: torch.Tensor) -> None:
        if path is None:
            return
        from mmt_ard.io import atomic_torch_save

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(head, path)
        except OSError as e:  # a read-only cache must not stop a run
            log.warning("could not write text-head cache %s: %s", path, e)


@torch.no_grad()
def build_text_head(
    clip: PixelCLIP, classnames: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """The standard CLIP zero-shot head (C, D), float32 on CPU."""
    was_training = clip.training
    clip.eval()
    rows = []
    for name in classnames:
        texts = [t.format(name) for t in templates]
        emb = torch.cat([clip.encode_text(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
        rows.append(F.normalize(emb.float().mean(dim=0), dim=-1))
    clip.train(was_training)
    return torch.stack(rows).cpu()
