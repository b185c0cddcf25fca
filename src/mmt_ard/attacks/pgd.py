"""Projected gradient descent (ascent) in pixel space: the one attack implementation.

L-inf or L2 ball around ``x``, random start uniform in the ball, optional momentum on the normalized
gradient, projection and clamp to [0, 1] after every step. The attacked model is put in eval
mode for the attack (BatchNorm and dropout frozen) and its mode restored after. Evaluation
attacks run in float32 with autocast off; a training attack may pass ``precision="bf16"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mmt_ard.attacks.objectives import ObjectiveFn
from mmt_ard.devices import to_device
from mmt_ard.errors import ConfigError
from mmt_ard.models.frozen import eval_mode
from mmt_ard.precision import autocast

Norm = Literal["linf", "l2"]


@dataclass
class PGDConfig:
    """A PGD attack. ``step_size=None`` means ``eps / 4``; ``momentum=0`` turns momentum off."""

    norm: Norm = "linf"
    eps: float = 2 / 255
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    momentum: float = 0.0

    def validate(self) -> None:
        if not 0.0 < self.eps <= 1.0:
            raise ConfigError(f"attack eps must be in (0, 1] (pixels in [0, 1]); got {self.eps}. Write e.g. eps=2/255")
        if self.steps < 0:
            raise ConfigError(f"attack steps must be >= 0; got {self.steps}")
        if self.step_size is not None and self.step_size <= 0:
            raise ConfigError(f"attack step_size must be > 0; got {self.step_size}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"attack momentum must be in [0, 1); got {self.momentum}")

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / 4


def _per_sample_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    return t.flatten(1).norm(p=p, dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def project(delta: torch.Tensor, norm: Norm, eps: float) -> torch.Tensor:
    """The closest point of the ``norm`` ball of radius ``eps`` (per sample)."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _per_sample_norm(delta, 2)).clamp(max=1.0)


def random_start(x: torch.Tensor, norm: Norm, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """A point drawn uniformly from the ``norm`` ball of radius ``eps`` around 0, per sample.

    L-inf: each coordinate uniform in [-eps, eps]. L2: a uniform direction and radius
    ``eps * U^(1/d)`` (d = pixels per sample), which is uniform in the ball's volume.
    """
    if norm == "linf":
        u = to_device(torch.rand(x.shape, generator=generator, device="cpu"), x.device)
        return (2 * u - 1) * eps
    d = to_device(torch.randn(x.shape, generator=generator, device="cpu"), x.device)
    u = to_device(torch.rand((x.shape[0],), generator=generator, device="cpu"), x.device)
    radius = eps * u.pow(1.0 / x[0].numel())
    return d / _per_sample_norm(d, 2) * radius.view(-1, *([1] * (x.dim() - 1)))


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    objective: ObjectiveFn,
    cfg: PGDConfig,
    precision: str = "fp32",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial examples for the [0, 1] batch ``x`` that maximize ``objective`` (detached).

    ``model`` is only used to set eval mode; ``objective`` closes over it (see objectives.py).
    """
    cfg.validate()
    x = x.detach()
    delta = random_start(x, cfg.norm, cfg.eps, generator) if cfg.random_start else torch.zeros_like(x)
    delta = ((x + delta).clamp(0, 1) - x).detach()
    velocity = torch.zeros_like(x)
    with eval_mode(model):
        for _ in range(cfg.steps):
            delta.requires_grad_(True)
            # the backward too: on the CPU it runs in this thread, under any autocast the caller holds
            with autocast(x.device, precision):
                loss = objective(x + delta).float().sum()
                (grad,) = torch.autograd.grad(loss, delta)
            grad = grad.detach()
            if cfg.momentum > 0:  # MI-FGSM: accumulate the L1-normalized gradient
                velocity = cfg.momentum * velocity + grad / _per_sample_norm(grad, 1)
                grad = velocity
            if cfg.norm == "linf":
                step = cfg.alpha * grad.sign()
            else:
                step = cfg.alpha * grad / _per_sample_norm(grad, 2)
            delta = project(delta.detach() + step, cfg.norm, cfg.eps)
            delta = ((x + delta).clamp(0, 1) - x).detach()
    return (x + delta).detach()
