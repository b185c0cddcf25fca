"""CLIP models in pixel space: architectures, loading, zero-shot heads, LoRA."""

from mmt_ard.models.archs import BUILTIN_ARCHS, arch_config, register_archs
from mmt_ard.models.clip import LOGIT_SCALE, PixelCLIP, ZeroShotClassifier
from mmt_ard.models.loading import ModelSpec, load_clip, read_state_dict
from mmt_ard.models.zeroshot import TextHeadCache, build_text_head, default_cache_dir

register_archs()

__all__ = [
    "BUILTIN_ARCHS",
    "LOGIT_SCALE",
    "ModelSpec",
    "PixelCLIP",
    "TextHeadCache",
    "ZeroShotClassifier",
    "arch_config",
    "build_text_head",
    "default_cache_dir",
    "load_clip",
    "read_state_dict",
    "register_archs",
]
