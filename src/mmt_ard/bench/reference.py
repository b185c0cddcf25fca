"""The reference step: METHOD.md's distillation step written out plainly, in float32.

It is the baseline the optimized :class:`~mmt_ard.distill.task.DistillationTask` is timed against
and the check on its loss, so it shares none of the task's loss or attack code. It is *not* the
authors' released code: that code weights the two KL terms by 50 and 5 times each teacher's cosine
to the true class (METHOD.md's ``released-code`` strategy) instead of eqs. (3)-(6), attacks with a
momentum-0.9 PGD on the KL to the clean teacher, and runs a third, unused teacher forward. This step
does the work a straightforward implementation of METHOD.md does (the released code does slightly
more), so the speed ratio against it is a fair, if anything conservative, measure of the fast path:

* float32, autocast off, whatever the caller holds;
* both teachers run every step: the clean teacher on ``x``, the adversarial teacher on ``x'``;
* the student's clean and adversarial views are two separate forward passes;
* its own PGD loop (L-inf, uniform random start drawn from the step's generator exactly as the
  task draws it, sign step, projection, clamp to [0, 1]) with the student in eval mode;
* the outer loss of METHOD.md section 3 for the strategies ``confidence`` (eqs. 3-6) and
  ``adv-only``, plus ``gamma`` times the cross-modal KL of section 3.2.

Anything else (other strategies, objectives, norms, momentum, no random start) is refused.

:class:`ReleasedCodeStep` is the other reference, optional in the bench (``--released-code``): a step
that follows the released code's own choices, so the optimized step is also timed against what users
of that code run today:

* the inner attack is L-inf PGD with momentum 0.9 (the L1-normalized gradient accumulated, sign step)
  on ``KL(softmax(z_Torg(x)) || softmax(z_S(x')))``, random start;
* the outer loss weights the per-sample KL terms by ``50 c_adv`` and ``5 c_org`` over the number of
  classes, ``c`` each teacher's cosine to the true class (METHOD.md 3.1), plus ``gamma`` L_cm;
* a third teacher forward whose output nothing reads (the adversarial teacher on the clean batch).

Its loss equals the optimized task's configured the same way (``released-code`` strategy,
``kl-clean-teacher`` objective, momentum 0.9), which the tests check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmt_ard.data.batches import step_generator
from mmt_ard.distill.strategies import StrategyConfig
from mmt_ard.distill.task import InnerAttackConfig, LossConfig
from mmt_ard.distributed import skip_to_rank
from mmt_ard.errors import ConfigError
from mmt_ard.models.clip import ZeroShotClassifier
from mmt_ard.models.frozen import eval_mode
from mmt_ard.training.timing import NO_SECTIONS, Sections

OBJECTIVES = ("embedding-l2", "kl-clean-teacher")
STRATEGIES = ("confidence", "adv-only")
RELEASED_MOMENTUM = 0.9  # the released code's inner attack


def unsupported(attack: InnerAttackConfig, loss: LossConfig) -> list[str]:
    """What of ``attack`` and ``loss`` the reference step does not implement (empty: all of it)."""
    problems = []
    if attack.objective not in OBJECTIVES:
        problems.append(f"attack objective {attack.objective!r} (it implements {', '.join(OBJECTIVES)})")
    if attack.norm != "linf":
        problems.append(f"norm {attack.norm!r} (it implements linf)")
    if not attack.random_start:
        problems.append("PGD without a random start")
    if attack.momentum != 0:
        problems.append(f"momentum {attack.momentum}")
    if loss.strategy.name not in STRATEGIES:
        problems.append(f"strategy {loss.strategy.name!r} (it implements {', '.join(STRATEGIES)})")
    return problems


def refuse(step: str, problems: list[str]) -> None:
    """Raise a :class:`ConfigError` naming everything ``step`` does not implement (nothing if none)."""
    if problems:
        raise ConfigError(f"the {step} step does not implement " + "; ".join(problems))


def check_supported(attack: InnerAttackConfig, loss: LossConfig) -> None:
    refuse("reference", unsupported(attack, loss))


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    """``sum_c p_c (log p_c - log q_c)`` per row (B,), ``p = softmax(p_logits / t)``, ``q`` likewise."""
    log_p = F.log_softmax(p_logits.float() / t, dim=-1)
    log_q = F.log_softmax(q_logits.float() / t, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


class ReferenceStep:
    """One MMT-ARD training step as the authors' code computes it (forward and loss only).

    ``training_step(batch, step)`` has the task's signature and returns its named terms with
    ``"loss"``; backward and the optimizer are the caller's, as for the task. ``timer`` takes a
    :class:`~mmt_ard.training.timing.Sections` to time the same sections the task times.
    """

    def __init__(
        self,
        student: ZeroShotClassifier,
        teacher_clean: nn.Module,
        teacher_adv: nn.Module,
        attack: InnerAttackConfig,
        loss: LossConfig,
        seed: int = 0,
    ) -> None:
        self.check(attack, loss)
        attack.validate()
        loss.validate()
        self.student = student
        self.teacher_clean = teacher_clean
        self.teacher_adv = teacher_adv
        self.attack_cfg = attack
        self.loss_cfg = loss
        self.seed = seed
        self.timer: Sections = NO_SECTIONS
        self.teacher_scale = float(getattr(teacher_adv, "scale", 100.0))  # z = s * cosine

    check = staticmethod(check_supported)
    unused_teacher_forward = False  # the released code's third forward (ReleasedCodeStep)

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> ReferenceStep:
        """The student's mode for the outer forward (the attack always runs in eval mode)."""
        self.student.train(mode)
        return self

    def _objective(self, x: torch.Tensor, teacher_clean_logits: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """Per-sample inner objective ``x_adv -> (B,)``; called with the student in eval mode."""
        student, cfg = self.student, self.attack_cfg
        if cfg.objective == "embedding-l2":  # ||f_S(x') - f_S(x).detach()||^2, paper eq. (2)
            with torch.no_grad():
                anchor = student.features(x, normalize=cfg.normalize_embeddings).float()  # (B, D)
            return lambda xa: (student.features(xa, normalize=cfg.normalize_embeddings).float() - anchor).pow(2).sum(-1)
        target = teacher_clean_logits.detach()  # kl-clean-teacher: KL(softmax(z_Torg(x)) || softmax(z_S(x')))
        return lambda xa: kl_rows(target, student(xa))

    def attack(self, x: torch.Tensor, teacher_clean_logits: torch.Tensor, step: int) -> torch.Tensor:
        """x' by L-inf PGD on the student in eval mode, random start from the step's generator."""
        cfg = self.attack_cfg
        x = x.detach()
        gen = skip_to_rank(step_generator(self.seed, step), x)
        u = torch.rand(x.shape, generator=gen, device="cpu").to(x.device)  # uniform in [-eps, eps]
        delta = (2 * u - 1) * cfg.eps
        delta = ((x + delta).clamp(0, 1) - x).detach()
        velocity = torch.zeros_like(x)
        with eval_mode(self.student):
            objective = self._objective(x, teacher_clean_logits)
            for _ in range(cfg.steps):
                delta.requires_grad_(True)
                total = objective(x + delta).float().sum()
                (grad,) = torch.autograd.grad(total, delta)
                if cfg.momentum:  # velocity += L1-normalized gradient (ReleasedCodeStep only)
                    l1 = grad.detach().abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                    grad = velocity = cfg.momentum * velocity + grad.detach() / l1
                delta = (delta.detach() + cfg.alpha * grad.detach().sign()).clamp(-cfg.eps, cfg.eps)
                delta = ((x + delta).clamp(0, 1) - x).detach()
        return (x + delta).detach()

    def loss(
        self,
        s_clean: torch.Tensor,
        s_adv: torch.Tensor,
        t_clean: torch.Tensor,
        t_adv: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """METHOD.md section 3 for ``confidence``, ``adv-only`` or ``released-code``, plus ``gamma`` L_cm (3.2)."""
        cfg = self.loss_cfg
        t = cfg.temperature
        l_clean = t * t * kl_rows(t_clean.detach(), s_clean, t)  # (B,)
        l_adv = t * t * kl_rows(t_adv.detach(), s_adv, t)  # (B,)
        lambda_org, lambda_adv = cfg.lambda_org, cfg.lambda_adv
        if cfg.strategy.name == "released-code":  # 50 c_adv KL_adv + 5 c_org KL_clean, over C; no lambdas
            assert labels is not None
            opts, classes = cfg.strategy.released_code, t_adv.shape[-1]
            c_adv = t_adv.detach().float()[torch.arange(len(labels)), labels] / self.teacher_scale
            c_org = t_clean.detach().float()[torch.arange(len(labels)), labels] / self.teacher_scale
            w_adv, w_clean = opts.adv * c_adv / classes, opts.clean * c_org / classes
            lambda_org = lambda_adv = 1.0
        elif cfg.strategy.name == "confidence":
            conf_adv = F.softmax(t_adv.detach().float(), dim=-1).max(dim=-1).values  # eq. (3)
            conf_org = F.softmax(t_clean.detach().float(), dim=-1).max(dim=-1).values  # eq. (3)
            rho = conf_adv / (conf_org + 1e-5)  # eq. (4)
            opts = cfg.strategy.confidence
            w_adv = torch.sigmoid(opts.slope * (rho - opts.offset))  # eq. (5)
            w_clean = 1.0 - w_adv  # eq. (6)
        else:  # adv-only
            w_adv, w_clean = torch.ones_like(l_adv), torch.zeros_like(l_clean)
        loss_kd = (lambda_org * w_clean * l_clean + lambda_adv * w_adv * l_adv).mean()
        loss_cm = kl_rows(s_clean.detach(), s_adv).mean()  # KL(softmax(z_S(x)).detach() || softmax(z_S(x')))
        return {
            "loss": loss_kd + cfg.gamma * loss_cm,
            "loss_kd": loss_kd,
            "loss_cm": loss_cm,
            "kl_clean": l_clean.mean(),
            "kl_adv": l_adv.mean(),
            "w_adv": w_adv.mean(),
        }

    def training_step(self, batch: tuple[torch.Tensor, ...], step: int) -> dict[str, torch.Tensor]:
        """The step's terms; ``batch`` is ``(x, y)`` or ``(x, y, idx)`` (idx is not used)."""
        x, y = batch[0], batch[1]
        timer = self.timer
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            self.teacher_clean.eval()
            self.teacher_adv.eval()
            with timer("teacher_clean"), torch.no_grad():
                t_clean = self.teacher_clean(x)  # (B, C)
            with timer("attack"):
                x_adv = self.attack(x, t_clean, step)
            with timer("teacher_adv"), torch.no_grad():
                t_adv = self.teacher_adv(x_adv)  # (B, C)
                if self.unused_teacher_forward:
                    self.teacher_adv(x)  # the released code's third teacher forward: nothing reads it
            with timer("student_forward"):
                s_clean = self.student(x)  # (B, C)
                s_adv = self.student(x_adv)  # (B, C)
                return self.loss(s_clean, s_adv, t_clean, t_adv, y)


def released_unsupported(attack: InnerAttackConfig, loss: LossConfig) -> list[str]:
    """What of ``attack`` and ``loss`` is not the released code's choice (empty: all of it is)."""
    problems = []
    if attack.objective != "kl-clean-teacher":
        problems.append(f"attack objective {attack.objective!r} (the released code attacks kl-clean-teacher)")
    if attack.norm != "linf" or not attack.random_start:
        problems.append("anything but L-inf PGD with a random start")
    if loss.strategy.name != "released-code":
        problems.append(f"strategy {loss.strategy.name!r} (the released code weights by released-code)")
    return problems


def check_released(attack: InnerAttackConfig, loss: LossConfig) -> None:
    refuse("released-code", released_unsupported(attack, loss))


class ReleasedCodeStep(ReferenceStep):
    """The released code's step (see the module docstring); build it with :func:`released_recipe`."""

    check = staticmethod(check_released)
    unused_teacher_forward = True


def released_recipe(attack: InnerAttackConfig, loss: LossConfig) -> tuple[InnerAttackConfig, LossConfig]:
    """``attack`` and ``loss`` with the released code's choices: KL attack with momentum, its weighting."""
    return (
        replace(attack, objective="kl-clean-teacher", momentum=RELEASED_MOMENTUM),
        replace(loss, strategy=StrategyConfig(name="released-code")),
    )


@dataclass
class LossCheck:
    """The optimized and the reference step's loss on the same models, batch and step."""

    optimized: float
    reference: float
    rel_diff: float
    rtol: float
    passed: bool
    x_adv_max_diff: float | None = None  # max |x'_optimized - x'_reference|, when measured
    x_adv_differing: int | None = None  # elements of x' that differ

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare_losses(optimized: float, reference: float, rtol: float = 1e-4) -> LossCheck:
    """Pass when both are finite and ``|optimized - reference| <= rtol * |reference|``."""
    diff = abs(optimized - reference) / max(abs(reference), 1e-12)
    finite = math.isfinite(optimized) and math.isfinite(reference)
    return LossCheck(optimized, reference, diff if finite else math.inf, rtol, finite and diff <= rtol)
