"""Build a :class:`PixelCLIP` from an architecture name and weights.

Weights may come from an open_clip pretrained tag (downloaded by open_clip where the user has a
network or a cache), a local open_clip checkpoint (``.pt``/``.bin`` state dict, optionally under
``state_dict``, or ``.safetensors``), and on top of that a vision-only state dict in the layout
FARE, TeCoA and PMG-AFT release (bare ``visual`` keys, or under ``vision_encoder_state_dict``).
Every file is read with ``weights_only=True`` or safetensors: a checkpoint is untrusted input.
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from mmt_ard.config import expand_env
from mmt_ard.errors import CheckpointError, UserError
from mmt_ard.models.archs import arch_config, register_archs
from mmt_ard.models.clip import PixelCLIP
from mmt_ard.models.export import CONFIG, resolve_weights

log = logging.getLogger(__name__)

VISION_KEYS = ("vision_encoder_state_dict", "visual", "vision")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


@dataclass
class ModelSpec:
    """Which CLIP to build.

    ``pretrained``: an open_clip tag (``openai``, ``laion2b_s34b_b79k``...) or a local checkpoint
    file; ``None`` is random init. ``vision``: a vision-only state dict loaded over the vision
    tower after ``pretrained`` (how FARE/TeCoA/PMG-AFT release their robust encoders).
    """

    arch: str = "mmt-vit-s"
    pretrained: str | None = None
    vision: str | None = None

    @classmethod
    def parse(cls, text: str) -> tuple[str, ModelSpec]:
        """``[NAME=]SPEC`` -> (name, spec), SPEC ``ARCH[@PRETRAINED][,vision=PATH]`` or an export folder.

        Without ``NAME=`` the name is the architecture, or an export folder's run (``runs/x/student`` -> ``x``).
        """
        head, _, vision = text.partition(",vision=")
        name, _, spec = head.partition("=") if "=" in head else ("", "", head)
        path = Path(spec)
        if (path / CONFIG).is_file():
            arch = json.loads((path / CONFIG).read_text()).get("arch")
            if not arch:
                raise UserError(f"{str(path / CONFIG)!r} names no 'arch'; pass ARCH@{spec} instead")
            model = cls(arch=arch, pretrained=spec, vision=vision or None)
            default = path.resolve().parent.name if path.name in ("model", "student") else path.resolve().name
        else:
            arch, _, pretrained = spec.partition("@")
            if not arch:
                raise UserError(f"bad --model {text!r}; write NAME=ARCH[@WEIGHTS][,vision=PATH] or NAME=EXPORT_FOLDER")
            model = cls(arch=arch, pretrained=pretrained or None, vision=vision or None)
            default = arch
        return name or default, model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` dict from a checkpoint file, never unpickling code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist; check the path")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt or not a plain tensor file "
            f"(only weights are loaded, never pickled code): {first[:200]}"
        ) from None
    return _tensor_dict(obj, p)


def _tensor_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in (*WRAPPER_KEYS, *VISION_KEYS):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        # releases keep metadata (epoch, args) beside the weights: keep the tensors only
        obj = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not hold a state dict (name -> tensor); "
            "pass an open_clip checkpoint or a vision-encoder state dict"
        )
    return {_strip(k, ("module.",)): v for k, v in obj.items()}


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def load_into(module: nn.Module, state: dict[str, torch.Tensor], what: str, source: str) -> None:
    """Strict load with an error that names both sides when the architecture does not fit."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (first: {wrong[0]})")
        if missing:
            parts.append(f"{len(missing)} keys missing from the checkpoint (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]})")
        raise CheckpointError(
            f"checkpoint {source!r} does not fit {what}: {'; '.join(parts)}. "
            "Pass the architecture the checkpoint was trained with."
        )
    module.load_state_dict(state, strict=True)


def vision_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The vision-tower part of a vision-only release (bare, prefixed or nested)."""
    for key in VISION_KEYS:
        nested = state.get(key)  # type: ignore[call-overload]
        if isinstance(nested, dict):
            state = nested
            break
    if any(k.startswith(("visual.", "model.visual.")) for k in state):  # a whole CLIP: its vision tower only
        state = {k: v for k, v in state.items() if k.startswith(("visual.", "model.visual."))}
    prefixes = ("model.visual.", "visual.", "model.", "vision_encoder.")
    return {_strip(k, prefixes): v for k, v in state.items()}


def uses_quick_gelu(arch: str) -> bool:
    """Whether open_clip builds ``arch`` with QuickGELU (the OpenAI CLIP activation)."""
    return bool(arch_config(arch).get("quick_gelu", False))


def resolve_arch(arch: str, pretrained: str | None) -> str:
    """The architecture to build for ``arch`` with weights ``pretrained``.

    OpenAI's weights (and every tag open_clip marks ``quick_gelu``) were trained with QuickGELU,
    but open_clip's ``ViT-B-32``, ``RN50``... configs use GELU and only warn on the mismatch. For
    such a tag this returns the ``-quickgelu`` twin, so ``ViT-B-32@openai`` builds the network
    its weights were trained in, and an export records that architecture.
    """
    if pretrained is not None and (Path(pretrained) / CONFIG).is_file():
        recorded = json.loads((Path(pretrained) / CONFIG).read_text()).get("arch", arch)
        if recorded != arch:
            raise UserError(
                f"{pretrained!r} was exported as {recorded!r}, not {arch!r} (same weights, maybe another "
                f"activation); pass {recorded}@{pretrained}, or the folder alone"
            )
    if pretrained is None or _looks_like_path(pretrained) or Path(pretrained).exists():
        return arch
    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained) or {}
    if not tag_cfg.get("quick_gelu") or uses_quick_gelu(arch):
        return arch
    twin = f"{arch}-quickgelu"
    if twin not in open_clip.list_models() or pretrained not in open_clip.list_pretrained_tags_by_model(twin):
        raise UserError(
            f"open_clip weights {arch}@{pretrained} were trained with QuickGELU but open_clip has no "
            f"{twin!r} config to build them in; pass an architecture with quick_gelu=true"
        )
    log.info("%s@%s was trained with QuickGELU: building %s", arch, pretrained, twin)
    return twin


def _warn_if_gelu_twin(arch: str, source: str) -> None:
    """Local weights cannot say their activation: warn where a QuickGELU twin exists."""
    twin = f"{arch}-quickgelu"
    if not uses_quick_gelu(arch) and twin in open_clip.list_models():
        log.warning(
            "%s builds GELU; if %s derives from OpenAI CLIP (as FARE, TeCoA, PMG-AFT and the paper's "
            "models do) pass %s instead, or accuracy silently drops",
            arch,
            source,
            twin,
        )


def _create(arch: str, pretrained: str | None) -> nn.Module:
    arch_config(arch)  # clear error for unknown names
    if pretrained is not None:
        pretrained = str(resolve_weights(pretrained))
    if pretrained is not None and _looks_like_path(pretrained) and not Path(pretrained).exists():
        raise CheckpointError(f"checkpoint {pretrained!r} does not exist; check the path")
    if pretrained is None or Path(pretrained).is_file():
        model = open_clip.create_model(arch, pretrained=None)
        if pretrained is not None:
            state = read_state_dict(pretrained)
            if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
                state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
            load_into(model, state, f"architecture {arch!r}", pretrained)
        return model
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pretrained not in tags:
        raise UserError(
            f"pretrained {pretrained!r} is neither a file nor an open_clip tag of {arch!r} "
            f"(tags: {', '.join(tags) or 'none'}); pass an existing checkpoint path or a known tag"
        )
    try:
        return open_clip.create_model(arch, pretrained=pretrained)
    except Exception as e:  # noqa: BLE001 - network or cache failures come in many types
        raise UserError(
            f"could not load open_clip weights {arch}/{pretrained}: {str(e).splitlines()[0][:200]}. "
            "Without a network, download the checkpoint elsewhere and pass its file path."
        ) from None


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or Path(text).suffix in (".pt", ".pth", ".bin", ".safetensors")


def load_clip(spec: ModelSpec, device: str | torch.device = "cpu") -> PixelCLIP:
    """Build the CLIP model ``spec`` names, in eval mode, on ``device``."""
    register_archs()
    spec = ModelSpec(
        spec.arch,
        expand_env(spec.pretrained) if spec.pretrained else None,
        expand_env(spec.vision) if spec.vision else None,
    )
    arch = resolve_arch(spec.arch, spec.pretrained)
    local = spec.pretrained is not None and Path(spec.pretrained).is_file()  # export folders name their arch
    if local or spec.vision is not None:
        _warn_if_gelu_twin(arch, spec.vision or spec.pretrained or "")
    model = _create(arch, spec.pretrained)
    if spec.vision is not None:
        state = vision_state(read_state_dict(resolve_weights(spec.vision)))
        load_into(model.visual, state, f"the vision tower of {arch!r}", spec.vision)
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    source = ";".join(s for s in (spec.pretrained, spec.vision) if s) or "random"
    clip = PixelCLIP(model, arch, pre["mean"], pre["std"], size, source=source)
    log.debug("built %s from %s", arch, source)
    return clip.to(device).eval()
