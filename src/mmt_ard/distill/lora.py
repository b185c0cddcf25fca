"""LoRA students through ``peft``.

Adapters go on the vision tower's attention projections. peft would merge adapters of an
``nn.MultiheadAttention`` into its packed weights inside each forward, where ``lora.dropout`` never
acts, so every ViT attention is first swapped for :class:`~mmt_ard.distill.attention.SplitAttention`
(the same function with ``q_proj``/``k_proj``/``v_proj``/``out_proj`` as ``nn.Linear``) and the
adapters go on those four linears. Merging turns it back into ``nn.MultiheadAttention``, so
exports are plain open_clip models; ``adapters/`` (peft format) names the split projections.
open_clip's ModifiedResNet reads its
attention-pool projections as raw weights (``F.multi_head_attention_forward``), so adapters
there would never run; ResNet students get adapters on their residual-block convolutions
instead. Either default is overridden by ``target_modules``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from torch import nn

from mmt_ard.distill.attention import join_attention, split_attention
from mmt_ard.errors import ConfigError
from mmt_ard.models.clip import PixelCLIP

RESNET_CONVS = r".*layer\d+\.\d+\.conv[123]"
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class LoraConfig:
    """``enabled=false`` trains the whole vision tower. Defaults follow the paper (16, 16, 0.1)."""

    enabled: bool = False
    rank: int = 16
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=list)  # empty: attention projections (see module doc)


def default_targets(visual: nn.Module, attention: list[str]) -> list[str] | str:
    """The split attention projections of a ViT, residual convs of a ResNet (by module type)."""
    if attention:
        return [f"{name}.{proj}" for name in attention for proj in ATTENTION_PROJECTIONS]
    if any(isinstance(m, nn.Conv2d) for m in visual.modules()):
        return RESNET_CONVS
    raise ConfigError("no attention or convolution layers to adapt; set lora.target_modules")


def apply_lora(clip: PixelCLIP, cfg: LoraConfig) -> PeftModel:
    """Wrap ``clip``'s vision tower with LoRA adapters; only the adapters are trainable."""
    if cfg.rank <= 0:
        raise ConfigError(f"lora.rank must be positive, got {cfg.rank}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"lora.dropout must be in [0, 1), got {cfg.dropout}")
    attention = split_attention(clip.model.visual)  # numerically the same network
    targets = list(cfg.target_modules) or default_targets(clip.model.visual, attention)
    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets)
    try:
        wrapped = get_peft_model(clip.model.visual, peft_cfg)
    except ValueError as e:
        join_attention(clip.model.visual)
        raise ConfigError(f"lora.target_modules {targets} did not match the vision tower: {e}") from None
    clip.model.requires_grad_(False)
    for name, p in wrapped.named_parameters():
        p.requires_grad_("lora_" in name)
    clip.model.visual = wrapped
    return wrapped


def is_lora(clip: PixelCLIP) -> bool:
    return isinstance(clip.model.visual, PeftModel)


def merged_copy(clip: PixelCLIP) -> PixelCLIP:
    """A plain open_clip copy of a LoRA student with the adapters merged (other students as they are)."""
    if not is_lora(clip):
        return clip
    out = copy.deepcopy(clip)
    out.model.visual = out.model.visual.merge_and_unload()
    join_attention(out.model.visual)
    return out


def save_adapters(clip: PixelCLIP, folder: str | Path) -> None:
    """The adapters alone, in peft's own format (``adapter_model.safetensors`` + config)."""
    if is_lora(clip):
        clip.model.visual.save_pretrained(str(folder))
