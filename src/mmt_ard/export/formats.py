"""Write a :class:`PixelCLIP` in the formats other tools load, chosen by registry key.

=====================  ======================================================  ==========================
format                 writes                                                  loaded by
=====================  ======================================================  ==========================
``open_clip``          ``open_clip_model.safetensors`` + ``open_clip_config.json``  open_clip, OpenFlamingo, mmt-ard
``vision-state-dict``  ``vision_encoder.pt`` (bare ``visual`` keys) + info JSON   FARE/TeCoA/PMG-AFT-style code,
                                                                                  mmt-ard ``vision=``
``hf``                 ``config.json`` + ``model.safetensors`` +                ``transformers`` CLIPVisionModel,
                       ``preprocessor_config.json``                             LLaVA-1.5 (``mm_vision_tower``)
=====================  ======================================================  ==========================

Every file is written atomically (temporary file + rename) by the main process only.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mmt_ard.export.hf_clip import check_convertible, image_processor_config, to_hf_vision_model
from mmt_ard.io import atomic_torch_save, atomic_write_json, is_main_process
from mmt_ard.models.clip import PixelCLIP
from mmt_ard.models.export import export_open_clip
from mmt_ard.registry import Registry

log = logging.getLogger(__name__)

Exporter = Callable[[PixelCLIP, Path], Path]
EXPORT_FORMATS: Registry[Exporter] = Registry("export format")

VISION_WEIGHTS = "vision_encoder.pt"
VISION_INFO = "vision_info.json"


def _info(clip: PixelCLIP, fmt: str) -> dict[str, object]:
    return {
        "format": fmt,
        "arch": clip.arch,
        "source": clip.source,
        "image_size": clip.image_size,
        "mean": [float(v) for v in clip.mean.flatten()],
        "std": [float(v) for v in clip.std.flatten()],
    }


@EXPORT_FORMATS.register("open_clip")
def _open_clip(clip: PixelCLIP, folder: Path) -> Path:
    export_open_clip(clip, folder)
    return folder


@EXPORT_FORMATS.register("vision-state-dict")
def _vision_state_dict(clip: PixelCLIP, folder: Path) -> Path:
    """The vision tower's own state dict (``conv1.weight``, ``transformer.resblocks.0...``)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in clip.visual.state_dict().items()}
    atomic_torch_save(state, folder / VISION_WEIGHTS)
    atomic_write_json(folder / VISION_INFO, _info(clip, "vision-state-dict"))
    return folder / VISION_WEIGHTS


@EXPORT_FORMATS.register("hf")
def _hf(clip: PixelCLIP, folder: Path) -> Path:
    """A ``CLIPVisionModelWithProjection`` folder; ``CLIPVisionModel.from_pretrained`` loads it too."""
    check_convertible(clip.visual, clip.arch)  # refuse before writing anything
    model = to_hf_vision_model(clip)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".hf-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for f in sorted(Path(tmp).iterdir()):
            os.replace(f, folder / f.name)  # each file lands whole
    atomic_write_json(folder / "preprocessor_config.json", image_processor_config(clip))
    atomic_write_json(folder / "mmt_ard_export.json", _info(clip, "hf"))
    return folder


def export_model(clip: PixelCLIP, folder: str | Path, fmt: str) -> Path:
    """Write ``clip`` to ``folder`` in format ``fmt`` (see the module table); returns the main file/folder.

    ``clip`` is put in float32 and eval mode (in place) first: exports are full precision.
    """
    exporter = EXPORT_FORMATS.get(fmt)
    out = Path(folder)
    if not is_main_process():
        return out
    result = exporter(clip.float().eval(), out)
    log.info("exported %s (%s) as %s to %s", clip.arch, clip.source, fmt, out)
    return result
