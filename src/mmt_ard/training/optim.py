"""AdamW with a cosine schedule and linear warmup."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from mmt_ard.errors import ConfigError


@dataclass
class OptimConfig:
    """Optimizer and schedule. ``warmup`` is a fraction of ``steps``; ``grad_clip=0`` is off."""

    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: float = 0.07  # the paper's 7% warmup
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999

    def validate(self) -> None:
        if self.steps <= 0 or self.batch_size <= 0:
            raise ConfigError(f"optim.steps and optim.batch_size must be positive, got {self.steps}, {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"optim.warmup is a fraction of the steps in [0, 1), got {self.warmup}")


def cosine_lr_factor(step: int, total: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier at ``step``: linear 0->1 over the warmup, then cosine down to ``min_ratio``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return min_ratio + (1.0 - min_ratio) * cosine


def build_optimizer(
    named_params: Iterable[tuple[str, nn.Parameter]], cfg: OptimConfig
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no weight decay on biases, norms, embeddings and scales) and its schedule."""
    cfg.validate()
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "embedding" in name or "logit_scale" in name or "class_embedding" in name
        (no_decay if skip else decay).append(p)
    if not decay and not no_decay:
        raise ConfigError("nothing to train: every parameter is frozen")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel per step, and it honours a device-side found_inf flag (see guards.py)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    warmup_steps = round(cfg.warmup * cfg.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_lr_factor(s, cfg.steps, warmup_steps, cfg.min_lr_ratio)
    )
    return opt, sched
