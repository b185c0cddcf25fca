"""The device a command runs on (``auto``, ``cpu``, ``cuda:N``), and moving host tensors to it without
stalling the host."""

from __future__ import annotations

import torch

from mmt_ard import distributed
from mmt_ard.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when there is a GPU), ``cpu``, ``cuda`` or ``cuda:N``; under torchrun it joins the
    process group and returns ``cuda:LOCAL_RANK``. An unknown name or a missing GPU is a ConfigError."""
    if name == "auto":  # under torchrun too: join the process group (it used to be skipped for "auto")
        return distributed.setup(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but no CUDA GPU is available; use device=cpu")
    return distributed.setup(device)  # under torchrun: join the process group, cuda:LOCAL_RANK


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
