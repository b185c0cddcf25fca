"""Deployable students: open_clip checkpoints, vision-only state dicts, transformers CLIP folders."""

from mmt_ard.export.formats import EXPORT_FORMATS, VISION_INFO, VISION_WEIGHTS, export_model
from mmt_ard.export.hf_clip import check_convertible, hf_state_dict, image_processor_config, to_hf_vision_model

__all__ = [
    "EXPORT_FORMATS",
    "VISION_INFO",
    "VISION_WEIGHTS",
    "check_convertible",
    "export_model",
    "hf_state_dict",
    "image_processor_config",
    "to_hf_vision_model",
]
