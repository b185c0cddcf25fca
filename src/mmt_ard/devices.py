"""Moving host tensors to a device without stalling the host."""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; host-to-GPU copies go through page-locked memory, so they do not block.

    (A copy from ordinary pageable memory makes the host wait for the GPU's queue to drain: a
    synchronisation every step.)
    """
    if device.type != "cuda" or t.device.type == "cuda":
        return t.to(device)
    if not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
