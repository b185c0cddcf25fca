"""The tiny open_clip architectures of the built-in world, registered with open_clip.

``mmt-vit-t`` is teacher-size, ``mmt-vit-s`` and ``mmt-rn-s`` (open_clip's ModifiedResNet) are
student-size; all take 32x32 images. After :func:`register_archs` (run on import of
:mod:`mmt_ard.models`), ``open_clip.create_model("mmt-vit-s")`` builds them like any other
open_clip model. The JSON files are plain open_clip model configs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip

ARCH_DIR = Path(__file__).parent / "archs"
BUILTIN_ARCHS: tuple[str, ...] = tuple(sorted(p.stem for p in ARCH_DIR.glob("*.json")))


def register_archs() -> None:
    """Make the built-in architectures known to open_clip (idempotent)."""
    if not set(BUILTIN_ARCHS) <= set(open_clip.list_models()):
        open_clip.add_model_config(ARCH_DIR)


def arch_config(name: str) -> dict[str, Any]:
    """The open_clip model config of any registered architecture (built-in or open_clip's)."""
    register_archs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        from mmt_ard.errors import UserError

        raise UserError(
            f"unknown model architecture {name!r}; use an open_clip name "
            f"(see open_clip.list_models()) or a built-in one: {', '.join(BUILTIN_ARCHS)}"
        )
    return json.loads(json.dumps(cfg))
