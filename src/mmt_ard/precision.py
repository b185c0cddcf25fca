"""Precision: bf16 only where the hardware runs it natively, and the one autocast every step runs under.

Every CUDA GPU PyTorch supports since Ampere runs bf16 matrix multiply in hardware, and so do
CPUs with AVX512-BF16 or AMX. Elsewhere PyTorch emulates it: on an AVX2-only CPU a bf16 matrix
multiply ran about 500x slower than float32 and a ViT-B-32 backward under bf16 autocast took
83 s instead of 1.1 s. A run asked for ``precision=bf16`` on such a device therefore says so in
one line and trains in float32, unless ``loop.force_bf16=true`` insists. Evaluation attacks are
always float32 regardless (see :mod:`mmt_ard.evaluation.metrics`).

What runs in bf16 where it is native: frozen models (teachers, FARE's and PMG-AFT's ``f0``) are held
in bf16 weights (:func:`mmt_ard.models.frozen.hold_in`), cast once; the trained student keeps
float32 master weights and runs under bf16 autocast, whose cast cache keeps the bf16 copies of
weights that require grad for the whole step (the loop holds one :func:`autocast` region per step;
a training attack holds its own, so that it runs in the precision asked for whatever the caller holds).

Below the models, attacks and training that use it: precision is not a training matter only.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]


def autocast(device: torch.device | str, precision: str) -> torch.autocast:
    """bf16 autocast on ``device`` (a device or its type) for ``precision="bf16"``; for anything else
    autocast *off*, also inside a caller's autocast region."""
    kind = device if isinstance(device, str) else device.type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype frozen models are held in for a training precision (bf16 or float32)."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


def _cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX tiles, as PyTorch's own CPU feature probe reports them."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix multiply in hardware."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    if device.type == "cpu":
        return _cpu_has_native_bf16()
    return True  # other accelerators (mps, xpu): trust the user's choice


def effective_precision(requested: Precision, device: torch.device, force_bf16: bool = False) -> Precision:
    """``requested``, except bf16 on a device without native bf16 (one warning, then float32)."""
    if requested != "bf16" or force_bf16 or bf16_native(device):
        return requested
    log.warning(
        "precision=bf16 asked for, but this %s has no native bf16 (no AVX512-BF16/AMX or bf16 GPU): "
        "emulated bf16 is orders of magnitude slower, so training runs in float32. "
        "Set loop.force_bf16=true to insist.",
        device.type,
    )
    return "fp32"
