"""Export a model in plain open_clip format, loadable without mmt-ard.

The folder holds ``open_clip_model.safetensors`` (the full CLIP state dict) and
``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``), so both of these work with only
open_clip installed::

    open_clip.create_model("local-dir:EXPORT")
    open_clip.create_model(ARCH, pretrained="EXPORT/open_clip_model.safetensors")  # ARCH known to open_clip
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import open_clip
from safetensors.torch import save

from mmt_ard.finished import file_stamp
from mmt_ard.io import atomic_write_bytes, atomic_write_text, is_main_process
from mmt_ard.models.archs import arch_config
from mmt_ard.models.clip import PixelCLIP

WEIGHTS = "open_clip_model.safetensors"
CONFIG = "open_clip_config.json"


def export_open_clip(clip: PixelCLIP, folder: str | Path) -> Path:
    """Write ``clip`` to ``folder`` in open_clip's local-dir layout; returns the weights file."""
    out = Path(folder)
    weights = out / WEIGHTS
    if not is_main_process():
        return weights
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in clip.model.state_dict().items()}
    atomic_write_bytes(weights, save(state, metadata={"arch": clip.arch, "format": "open_clip"}))
    pre = open_clip.get_model_preprocess_cfg(clip.model)
    config = {"model_cfg": arch_config(clip.arch), "preprocess_cfg": _plain(pre), "arch": clip.arch}
    atomic_write_text(out / CONFIG, json.dumps(config, indent=2) + "\n")
    return weights


def _plain(cfg: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


def resolve_weights(path: str | Path) -> Path:
    """A weights file, given either the file or an export folder holding one."""
    p = Path(path)
    return p / WEIGHTS if p.is_dir() and (p / WEIGHTS).is_file() else p


def spec_stamp(arch: str, pretrained: str | None, vision: str | None = None) -> dict[str, Any]:
    """What a model's numbers depend on: its architecture and the stamp (path, size, mtime) of each weights file.

    A tag (``openai``) is not a file: its stamp has zero size, and the tag itself is in the key.
    """
    return {
        "arch": arch,
        "pretrained": pretrained,
        "vision": vision,
        "files": [file_stamp(resolve_weights(p)) if p else None for p in (pretrained, vision)],
    }
