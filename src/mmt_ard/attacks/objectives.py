"""Attack objectives: what PGD maximizes, per sample.

An objective factory takes the attacked model, the clean batch and its context, and returns a
function ``x_adv -> (B,) losses`` to maximize. Anchors (clean embeddings) are computed once, on the
clean batch, and detached.

=============== ================================================== ==========================
name            maximizes                                           context
=============== ================================================== ==========================
``ce``          cross-entropy of the zero-shot logits               ``labels``
``kl``          KL(target || softmax(logits(x_adv)))                 ``target`` (B, C) probs
``embedding-l2`` ||f(x_adv) - anchor||^2 (anchor = f(x) by default)  ``anchor`` (B, D) optional
=============== ================================================== ==========================

``embedding-l2`` compares L2-normalized embeddings unless ``normalize=False`` (FARE's release and
the MMT-ARD authors' code compare the raw encoder outputs). Its gradient is zero at
``x_adv = x``, so it needs PGD's random start (:func:`check_random_start`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from mmt_ard.errors import ConfigError, UserError
from mmt_ard.models.clip import ZeroShotClassifier
from mmt_ard.models.frozen import eval_mode
from mmt_ard.registry import Registry

ObjectiveFn = Callable[[torch.Tensor], torch.Tensor]


class ObjectiveFactory(Protocol):
    def __call__(
        self,
        model: ZeroShotClassifier,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        anchor: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> ObjectiveFn: ...


OBJECTIVES: Registry[ObjectiveFactory] = Registry("attack objective")
NEEDS_RANDOM_START = frozenset({"embedding-l2"})  # zero gradient at delta = 0


def check_random_start(objective: str, cfg: object) -> None:
    """Refuse an attack that can never move: a zero-gradient objective without a random start."""
    if objective in NEEDS_RANDOM_START and not getattr(cfg, "random_start", True) and getattr(cfg, "steps", 0) > 0:
        raise ConfigError(
            f"the {objective} attack objective has zero gradient at the clean image, so PGD without a "
            "random start never moves; set attack.random_start=true"
        )


def kl_per_sample(target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` per row for probabilities ``target`` (B, C) and log-probs ``log_q``; 0 log 0 = 0.

    For a fixed (detached) target. Where the target needs a gradient use :func:`kl_logits`:
    the derivative of ``p log p`` is infinite at ``p = 0``.
    """
    return torch.special.xlogy(target, target).sum(-1) - (target * log_q).sum(-1)


def kl_logits(p_logits: torch.Tensor, q_logits: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    """``KL(softmax(p/t) || softmax(q/t))`` per row (B,), finite gradients on both sides."""
    log_p = F.log_softmax(p_logits.float() / t, dim=-1)
    log_q = F.log_softmax(q_logits.float() / t, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@OBJECTIVES.register("ce")
def cross_entropy(model, x, labels=None, target=None, anchor=None, normalize=True) -> ObjectiveFn:  # type: ignore[no-untyped-def]
    if labels is None:
        raise UserError("the 'ce' attack objective needs labels")
    return lambda xa: F.cross_entropy(model(xa).float(), labels, reduction="none")


@OBJECTIVES.register("kl")
def kl_to_target(model, x, labels=None, target=None, anchor=None, normalize=True) -> ObjectiveFn:  # type: ignore[no-untyped-def]
    if target is None:
        raise UserError("the 'kl' attack objective needs a target distribution")
    target = target.detach().float()
    return lambda xa: kl_per_sample(target, F.log_softmax(model(xa).float(), dim=-1))


@OBJECTIVES.register("embedding-l2")
def embedding_l2(model, x, labels=None, target=None, anchor=None, normalize=True) -> ObjectiveFn:  # type: ignore[no-untyped-def]
    if anchor is None:  # f(x) as the attack sees it: eval mode (no batch statistics, no dropout)
        with torch.no_grad(), eval_mode(model):
            anchor = model.features(x, normalize=normalize)
    anchor = anchor.detach().float()
    return lambda xa: (model.features(xa, normalize=normalize).float() - anchor).pow(2).sum(-1)
