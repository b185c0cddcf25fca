"""Running a chain of evaluation attacks per sample, and the ``pgd`` attack.

The names a chain may use are in :mod:`~mmt_ard.evaluation.chain`: ``pgd``, ``apgd-ce``, ``apgd-t``,
``fab-t``, ``square`` and the protocols ``autoattack`` and ``autoattack-standard``.
``EvalConfig.attack`` names one attack or several joined by ``+`` (``pgd+autoattack``). They run in
that order, each on the samples every earlier attack left correctly classified, so a sample counts
as robust only if it survived every attack: the per-sample worst case. Each attack's settings are
its own config section; the protocols' settings are fixed (:mod:`mmt_ard.evaluation.protocols`).
All but ``pgd`` run the AutoAttack authors' implementation (:mod:`mmt_ard.evaluation.autoattack`).

An attack is a function ``(classifier, x, y, eps, cfg, generator, ctx) -> (B,) bool`` that says,
per sample, whether the classifier is still correct on the adversarial example it found.
:class:`AttackTrace` counts, for each attack of the chain and each eps, how many samples were
still correct after it (cumulative, AutoAttack's convention), and how many evaluated samples had
a zero input gradient.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from mmt_ard.attacks import pgd
from mmt_ard.evaluation.chain import EVAL_ATTACKS, AttackContext, attack_names
from mmt_ard.evaluation.config import EvalConfig, eps_key, pct
from mmt_ard.models.clip import ZeroShotClassifier
from mmt_ard.models.frozen import eval_mode

log = logging.getLogger(__name__)


def still_correct(classifier: ZeroShotClassifier, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), torch.autocast(x_adv.device.type, enabled=False):
        return classifier(x_adv).argmax(-1) == y


class AnyIterate:
    """The cross-entropy objective of evaluation PGD, remembering which samples any iterate fooled.

    PGD evaluates the objective at the start point and after every step but the last; the caller
    checks the last point. A sample is broken if any of these points was misclassified, not only
    the final one (PGD's loss need not rise monotonically in accuracy).
    """

    def __init__(self, classifier: torch.nn.Module, labels: torch.Tensor) -> None:
        self.classifier = classifier
        self.labels = labels
        self.fooled = torch.zeros_like(labels, dtype=torch.bool)

    def __call__(self, x_adv: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(x_adv).float()  # (B, C)
        self.fooled |= logits.detach().argmax(-1) != self.labels
        return F.cross_entropy(logits, self.labels, reduction="none")


@EVAL_ATTACKS.register("pgd")
def pgd_attack(classifier, x, y, eps, cfg, generator, ctx) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """PGD on the cross-entropy (``eval.pgd``), ``restarts`` random restarts on the samples still correct.

    A sample is broken if any iterate (the random start included) fooled the model, not only the last.
    """
    correct = torch.ones(len(y), dtype=torch.bool, device=y.device)
    attack = cfg.pgd_config(eps)
    for _ in range(max(cfg.pgd.restarts, 1)):
        idx = correct.nonzero().squeeze(1)
        if len(idx) == 0:
            break
        watch = AnyIterate(classifier, y[idx])  # cross-entropy; remembers every fooled iterate
        x_adv = pgd(classifier, x[idx], watch, attack, precision="fp32", generator=generator)
        correct[idx] = still_correct(classifier, x_adv, y[idx]) & ~watch.fooled
    return correct


@dataclass
class AttackTrace:
    """Per-attack robust counts and zero-gradient counts of one :func:`accuracy_under_attack` call."""

    names: list[str]
    context: AttackContext = field(default_factory=AttackContext)
    total: int = 0
    hits: dict[str, dict[float, int]] = field(default_factory=dict)
    zero_grad: int = 0
    grad_checked: int = 0
    check_gradients: bool = True  # one extra forward-backward per batch

    @classmethod
    def for_eval(cls, cfg: EvalConfig, tag: str) -> AttackTrace:
        state = Path(cfg.state_dir) if cfg.state_dir else None
        context = AttackContext(state, re.sub(r"[^A-Za-z0-9_.-]+", "_", tag))
        return cls(attack_names(cfg.attack), context, check_gradients=cfg.sanity)

    def start_batch(self, classifier: ZeroShotClassifier, x: torch.Tensor, y: torch.Tensor, size: int) -> None:
        """A new batch of ``size`` samples; ``x, y`` are its clean-correct ones (gradient check)."""
        self.context.batch += 1
        self.total += size
        if self.check_gradients and len(y):
            self.zero_grad += int((input_gradient_norms(classifier, x, y) == 0).sum())
            self.grad_checked += len(y)

    def record(self, name: str, eps: float, survivors: int) -> None:
        self.hits.setdefault(name, {}).setdefault(eps, 0)
        self.hits[name][eps] += survivors

    def racc_by_attack(self, eps_sorted: list[float]) -> dict[str, dict[str, float]]:
        """``{attack: {eps: racc}}``: robust accuracy after each attack of the chain (cumulative)."""
        return {
            name: {eps_key(e): pct(self.hits.get(name, {}).get(e, 0), self.total) for e in eps_sorted}
            for name in self.names
        }


def input_gradient_norms(classifier: ZeroShotClassifier, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample L1 norm (B,) of d CE / d x at the clean images, in float32, eval mode."""
    x = x.detach().clone().requires_grad_(True)
    with eval_mode(classifier), torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        loss = F.cross_entropy(classifier(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad.abs().flatten(1).sum(1)


def attack_survivors(
    classifier: ZeroShotClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    cfg: EvalConfig,
    generator: torch.Generator,
    trace: AttackTrace | None = None,
) -> torch.Tensor:
    """(B,) bool: still correct after every attack ``cfg.attack`` names, each run on the survivors."""
    names = trace.names if trace is not None else attack_names(cfg.attack)
    ctx = trace.context if trace is not None else AttackContext()
    correct = torch.ones(len(y), dtype=torch.bool, device=y.device)
    for name in names:
        idx = correct.nonzero().squeeze(1)
        if len(idx):
            correct[idx] = EVAL_ATTACKS.get(name)(classifier, x[idx], y[idx], eps, cfg, generator, ctx)
        if trace is not None:
            trace.record(name, eps, int(correct.sum()))
    return correct
