"""An open_clip ViT vision tower as a Hugging Face ``transformers`` CLIP vision model.

LLaVA-1.5 loads its vision tower with ``CLIPVisionModel.from_pretrained(folder)`` and
``CLIPImageProcessor.from_pretrained(folder)`` and reads the hidden states of layer -2. This
module maps open_clip's ``VisionTransformer`` onto ``CLIPVisionModelWithProjection`` weight by
weight:

=================================================  =============================================
open_clip ``visual.``                               transformers ``vision_model.``
=================================================  =============================================
``conv1``, ``class_embedding``                      ``embeddings.patch_embedding``, ``.class_embedding``
``positional_embedding``                            ``embeddings.position_embedding.weight``
``ln_pre``                                          ``pre_layrnorm``
``transformer.resblocks.i.ln_1`` / ``ln_2``         ``encoder.layers.i.layer_norm1`` / ``layer_norm2``
``...attn.in_proj_{weight,bias}`` (q; k; v rows)    ``...self_attn.{q,k,v}_proj``
``...attn.out_proj``                                ``...self_attn.out_proj``
``...mlp.c_fc`` / ``mlp.c_proj``                    ``...mlp.fc1`` / ``mlp.fc2``
``ln_post`` (on the CLS token)                      ``post_layernorm`` (on the pooled CLS token)
``proj`` (width, D)                                 ``visual_projection.weight`` (D, width) = ``proj.T``
=================================================  =============================================

Only what HF's CLIP can express is converted; anything else (ResNets, attention pooling, average
pooling, LayerScale, custom blocks, no ``ln_pre``, activations other than GELU / QuickGELU) is
refused with a :class:`~mmt_ard.errors.UserError` instead of silently exporting another function.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from open_clip.transformer import QuickGELU, ResidualAttentionBlock, VisionTransformer
from torch import nn

from mmt_ard.errors import UserError
from mmt_ard.models.clip import PixelCLIP

log = logging.getLogger(__name__)


def _refuse(arch: str, why: str) -> UserError:
    return UserError(
        f"cannot convert {arch!r} to the transformers CLIP format: {why}. "
        "Export it with --format open_clip or --format vision-state-dict instead."
    )


def hidden_act(block: ResidualAttentionBlock, arch: str) -> str:
    """``quick_gelu`` or ``gelu`` from the block's actual activation module (never from the name)."""
    act = block.mlp.gelu
    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if type(act) is nn.GELU and act.approximate == "none":
        return "gelu"
    raise _refuse(arch, f"its MLP activation {act!r} is neither QuickGELU nor exact GELU")


def _check_block(block: nn.Module, arch: str, eps: float) -> None:
    if type(block) is not ResidualAttentionBlock:
        raise _refuse(arch, f"its transformer blocks are {type(block).__name__}, not plain residual attention blocks")
    if not (isinstance(block.ls_1, nn.Identity) and isinstance(block.ls_2, nn.Identity)):
        raise _refuse(arch, "it uses LayerScale")
    if hasattr(block, "ln_1_kv"):
        raise _refuse(arch, "it uses cross-attention")
    for ln in (block.ln_1, block.ln_2):
        if not isinstance(ln, nn.LayerNorm) or ln.eps != eps:
            raise _refuse(arch, "its layer norms differ from the first one (type or eps)")
    if block.attn.in_proj_weight is None or block.attn.in_proj_bias is None:
        raise _refuse(arch, "its attention has no packed q/k/v projection with bias")


def check_convertible(visual: nn.Module, arch: str) -> dict[str, Any]:
    """The ``CLIPVisionConfig`` arguments of ``visual``, or a UserError naming what HF cannot express."""
    if not isinstance(visual, VisionTransformer):
        raise _refuse(arch, f"its vision tower is a {type(visual).__name__}, and HF's CLIP only has ViTs")
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        raise _refuse(
            arch, "it does not pool the CLS token after ln_post (attn_pool / pool_type / final_ln_after_pool)"
        )
    if not isinstance(visual.ln_pre, nn.LayerNorm):
        raise _refuse(arch, "it has no ln_pre (HF's CLIP always applies pre_layrnorm)")
    if visual.conv1.bias is not None or visual.proj is None:
        raise _refuse(arch, "its patch embedding has a bias or it has no output projection")
    if visual.image_size[0] != visual.image_size[1] or visual.patch_size[0] != visual.patch_size[1]:
        raise _refuse(arch, "its images or patches are not square")
    eps = visual.ln_pre.eps
    if not isinstance(visual.ln_post, nn.LayerNorm) or visual.ln_post.eps != eps:
        raise _refuse(arch, "its ln_post differs from ln_pre (type or eps)")
    blocks = list(visual.transformer.resblocks)
    for block in blocks:
        _check_block(block, arch, eps)
    acts = {hidden_act(b, arch) for b in blocks}
    if len(acts) != 1:
        raise _refuse(arch, "its blocks mix activations")
    width = visual.conv1.out_channels
    return {
        "hidden_size": width,
        "intermediate_size": blocks[0].mlp.c_fc.out_features,
        "projection_dim": int(visual.proj.shape[1]),
        "num_hidden_layers": len(blocks),
        "num_attention_heads": blocks[0].attn.num_heads,
        "image_size": visual.image_size[0],
        "patch_size": visual.patch_size[0],
        "hidden_act": acts.pop(),
        "layer_norm_eps": eps,
    }


def _block_state(block: ResidualAttentionBlock, prefix: str) -> dict[str, torch.Tensor]:
    q_w, k_w, v_w = block.attn.in_proj_weight.chunk(3, dim=0)  # rows: q, then k, then v
    q_b, k_b, v_b = block.attn.in_proj_bias.chunk(3, dim=0)
    pairs = {
        "self_attn.q_proj.weight": q_w,
        "self_attn.q_proj.bias": q_b,
        "self_attn.k_proj.weight": k_w,
        "self_attn.k_proj.bias": k_b,
        "self_attn.v_proj.weight": v_w,
        "self_attn.v_proj.bias": v_b,
        "self_attn.out_proj.weight": block.attn.out_proj.weight,
        "self_attn.out_proj.bias": block.attn.out_proj.bias,
        "layer_norm1.weight": block.ln_1.weight,
        "layer_norm1.bias": block.ln_1.bias,
        "layer_norm2.weight": block.ln_2.weight,
        "layer_norm2.bias": block.ln_2.bias,
        "mlp.fc1.weight": block.mlp.c_fc.weight,
        "mlp.fc1.bias": block.mlp.c_fc.bias,
        "mlp.fc2.weight": block.mlp.c_proj.weight,
        "mlp.fc2.bias": block.mlp.c_proj.bias,
    }
    return {prefix + k: v for k, v in pairs.items()}


def hf_state_dict(visual: VisionTransformer) -> dict[str, torch.Tensor]:
    """The ``CLIPVisionModelWithProjection`` state dict of an open_clip ViT (after :func:`check_convertible`)."""
    vm = "vision_model."
    state = {
        vm + "embeddings.class_embedding": visual.class_embedding,
        vm + "embeddings.patch_embedding.weight": visual.conv1.weight,
        vm + "embeddings.position_embedding.weight": visual.positional_embedding,
        vm + "pre_layrnorm.weight": visual.ln_pre.weight,
        vm + "pre_layrnorm.bias": visual.ln_pre.bias,
        vm + "post_layernorm.weight": visual.ln_post.weight,
        vm + "post_layernorm.bias": visual.ln_post.bias,
        "visual_projection.weight": visual.proj.T,
    }
    for i, block in enumerate(visual.transformer.resblocks):
        state.update(_block_state(block, f"{vm}encoder.layers.{i}."))
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in state.items()}


def to_hf_vision_model(clip: PixelCLIP) -> nn.Module:
    """A ``transformers.CLIPVisionModelWithProjection`` computing the same function as ``clip.visual``."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(**check_convertible(clip.visual, clip.arch))
    model = CLIPVisionModelWithProjection(config)
    state = hf_state_dict(clip.visual)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise RuntimeError(f"HF CLIP mapping out of date: missing {missing}, unexpected {unexpected}")
    return model.eval()


def image_processor_config(clip: PixelCLIP) -> dict[str, Any]:
    """``preprocessor_config.json`` for ``CLIPImageProcessor``: resize + center crop to the model's size."""
    size = clip.image_size
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size},
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(v) for v in clip.mean.flatten()],
        "image_std": [float(v) for v in clip.std.flatten()],
        "do_convert_rgb": True,
        "resample": 3,  # bicubic, as CLIP's own preprocessing
    }
