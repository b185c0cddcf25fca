"""Weighting strategies: how the two teachers' KL terms combine (METHOD.md section 3.1).

Every strategy sees the logits of one step (:class:`DistillLogits`) and returns the
distillation loss with its named parts. Shared notation, per sample i, temperature t::

    L_clean_i = t^2 KL( softmax(z_Torg(x_i)/t)  || softmax(z_S(x_i)/t) )
    L_adv_i   = t^2 KL( softmax(z_Tadv(x'_i)/t) || softmax(z_S(x'_i)/t) )
    L_kd      = mean_i [ lambda_org w_clean_i L_clean_i + lambda_adv w_adv_i L_adv_i ]

Strategies differ in ``w`` (``average`` instead distills one mixed target on x'). Weights are
always detached. A stateful strategy (``adaptive-norm``) saves its state with the checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F

from mmt_ard.attacks import kl_logits, kl_per_sample
from mmt_ard.errors import ConfigError
from mmt_ard.registry import Registry


@dataclass
class DistillLogits:
    """The logits of one step (all (B, C)) and the loss settings."""

    student_clean: torch.Tensor  # z_S(x)
    student_adv: torch.Tensor  # z_S(x')
    teacher_clean: torch.Tensor  # z_Torg(x)
    teacher_adv: torch.Tensor  # z_Tadv(x')
    temperature: float = 1.0
    lambda_adv: float = 3.0
    lambda_org: float = 0.5
    lr_scale: float = 1.0  # current LR / base LR, for strategies whose step size decays with it
    labels: torch.Tensor | None = None  # (B,) true classes, for strategies that use them (released-code)
    teacher_scale: float = 100.0  # logit scale s of the teachers: z = s * <f(x), W_c>


def kd_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor, t: float) -> torch.Tensor:
    """Per-sample ``t^2 KL(softmax(teacher/t) || softmax(student/t))`` (B,), teacher first."""
    return kl_logits(teacher_logits.detach(), student_logits, t) * (t * t)


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """``max_c softmax(z)_c`` per sample (eq. 3), detached."""
    return F.softmax(logits.detach().float(), dim=-1).max(dim=-1).values


@dataclass
class ConfidenceOptions:
    """DIW (eqs. 3-6): ``w_adv = sigmoid(slope * (conf_adv / (conf_org + 1e-5) - offset))``."""

    slope: float = 5.0
    offset: float = 1.0  # equal teacher confidence gives equal weights


@dataclass
class StaticOptions:
    """Fixed ``(w_adv, w_clean) = (a, 1 - a)``."""

    a: float = 0.5


@dataclass
class AdaptiveNormOptions:
    """MTARD's adaptive normalization: ``eta`` (decayed with the LR) and the power ``beta``."""

    eta: float = 0.025
    beta: float = 1.0


@dataclass
class ReleasedCodeOptions:
    """The released code's constants: ``adv * c_adv * KL_adv + clean * c_org * KL_clean``, over classes."""

    adv: float = 50.0
    clean: float = 5.0


@dataclass
class StrategyConfig:
    """``name`` picks the strategy; each strategy reads only its own options section."""

    name: str = "confidence"
    confidence: ConfidenceOptions = field(default_factory=ConfidenceOptions)
    static: StaticOptions = field(default_factory=StaticOptions)
    adaptive_norm: AdaptiveNormOptions = field(default_factory=AdaptiveNormOptions)
    released_code: ReleasedCodeOptions = field(default_factory=ReleasedCodeOptions)


class WeightingStrategy(ABC):
    """Turns one step's logits into the distillation loss and its named terms."""

    def __call__(self, z: DistillLogits) -> dict[str, torch.Tensor]:
        l_clean = kd_kl(z.teacher_clean, z.student_clean, z.temperature)  # (B,)
        l_adv = kd_kl(z.teacher_adv, z.student_adv, z.temperature)  # (B,)
        w_adv, w_clean = self.weights(z, l_clean, l_adv)
        w_adv, w_clean = w_adv.detach(), w_clean.detach()
        loss = (z.lambda_org * w_clean * l_clean + z.lambda_adv * w_adv * l_adv).mean()
        # the spread of the per-sample weights (does DIW move them?): 10th and 90th percentile of the batch
        w = w_adv.float().reshape(-1)
        q10, q90 = torch.quantile(w, 0.1), torch.quantile(w, 0.9)  # python levels: no host-to-device copy
        return {
            "loss_kd": loss,
            "kl_clean": l_clean.mean(),
            "kl_adv": l_adv.mean(),
            "w_adv": w_adv.mean(),
            "w_clean": w_clean.mean(),
            "w_adv_q10": q10,
            "w_adv_q90": q90,
        }

    @abstractmethod
    def weights(
        self, z: DistillLogits, l_clean: torch.Tensor, l_adv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample ``(w_adv, w_clean)``, each (B,)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


STRATEGIES: Registry[type[WeightingStrategy]] = Registry("weighting strategy")


@STRATEGIES.register("adv-only")
class AdvOnly(WeightingStrategy):
    """The single-teacher baseline: only the adversarial teacher on x'."""

    def __init__(self, cfg: StrategyConfig) -> None:
        pass

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        return torch.ones_like(l_adv), torch.zeros_like(l_clean)


@STRATEGIES.register("static")
class Static(WeightingStrategy):
    """Fixed weights for the whole run (Table 3 "Dual-KL", Table 4 sweep)."""

    def __init__(self, cfg: StrategyConfig) -> None:
        if not 0.0 <= cfg.static.a <= 1.0:
            raise ConfigError(f"strategy.static.a must be in [0, 1], got {cfg.static.a}")
        self.a = cfg.static.a

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        return torch.full_like(l_adv, self.a), torch.full_like(l_clean, 1.0 - self.a)


@STRATEGIES.register("confidence")
class Confidence(WeightingStrategy):
    """Dynamic importance weighting from the teachers' confidences (eqs. 3-6)."""

    def __init__(self, cfg: StrategyConfig) -> None:
        self.slope = cfg.confidence.slope
        self.offset = cfg.confidence.offset

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        rho = confidence(z.teacher_adv) / (confidence(z.teacher_clean) + 1e-5)  # eq. (4)
        w_adv = torch.sigmoid(self.slope * (rho - self.offset))  # eq. (5)
        return w_adv, 1.0 - w_adv  # eq. (6)


@STRATEGIES.register("average")
class Average(WeightingStrategy):
    """Table 2 "Average": one KL on x' towards the mean of the two teachers' distributions.

    The clean teacher's distribution is taken on x (its own input, as in every strategy); the
    loss is ``lambda_adv * t^2 KL(mean target || softmax(z_S(x')/t))``, batch mean.
    """

    def __init__(self, cfg: StrategyConfig) -> None:
        pass

    def __call__(self, z: DistillLogits) -> dict[str, torch.Tensor]:
        t = z.temperature
        target = 0.5 * (F.softmax(z.teacher_adv.float() / t, -1) + F.softmax(z.teacher_clean.float() / t, -1))
        l_mix = kl_per_sample(target.detach(), F.log_softmax(z.student_adv.float() / t, -1)) * (t * t)
        with torch.no_grad():  # logged for comparison with the other strategies; not in the loss
            l_clean = kd_kl(z.teacher_clean, z.student_clean, t)
            l_adv = kd_kl(z.teacher_adv, z.student_adv, t)
        half = torch.full((), 0.5, device=l_mix.device)
        return {
            "loss_kd": z.lambda_adv * l_mix.mean(),
            "kl_mix": l_mix.mean(),
            "kl_clean": l_clean.mean(),
            "kl_adv": l_adv.mean(),
            "w_adv": half,
            "w_clean": half,
        }

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        return torch.full_like(l_adv, 0.5), torch.full_like(l_clean, 0.5)  # the mixing weights


@STRATEGIES.register("adaptive-norm")
class AdaptiveNorm(WeightingStrategy):
    """MTARD (ECCV 2022): the path whose loss fell less (relative to step 1) gains weight."""

    def __init__(self, cfg: StrategyConfig) -> None:
        self.eta = cfg.adaptive_norm.eta
        self.beta = cfg.adaptive_norm.beta
        self.w_clean = 0.5
        self.initial: tuple[float, float] | None = None  # (L0_clean, L0_adv)

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        now = (float(l_clean.detach().mean()), float(l_adv.detach().mean()))
        if self.initial is None:
            self.initial = now
        r_clean = (now[0] / max(self.initial[0], 1e-12)) ** self.beta
        r_adv = (now[1] / max(self.initial[1], 1e-12)) ** self.beta
        target = r_clean / max(r_clean + r_adv, 1e-12)
        self.w_clean -= self.eta * z.lr_scale * (self.w_clean - target)
        return torch.full_like(l_adv, 1.0 - self.w_clean), torch.full_like(l_clean, self.w_clean)

    def state_dict(self) -> dict[str, Any]:
        return {"w_clean": self.w_clean, "initial": list(self.initial) if self.initial else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_clean = float(state["w_clean"])
        self.initial = tuple(state["initial"]) if state["initial"] is not None else None  # type: ignore[assignment]


@STRATEGIES.register("released-code")
class ReleasedCode(WeightingStrategy):
    """What the authors' released code does instead of DIW (METHOD.md 3.1, itsnotacie/MMT-ARD).

    Per sample, ``c`` is the cosine between a teacher's normalized image embedding and its own text
    embedding of the *true* class (``z_T[i, y_i] / s``): the adversarial teacher's on x', the clean
    teacher's on x. The element-wise KL terms are averaged over batch and classes, which is the
    per-sample KL divided by C::

        L_kd = mean_i [ adv * c_adv_i * KL_adv_i + clean * c_org_i * KL_clean_i ] / C

    with ``adv = 50``, ``clean = 5``. ``loss.lambda_*`` and the sigmoid of DIW play no part.
    """

    def __init__(self, cfg: StrategyConfig) -> None:
        self.adv = cfg.released_code.adv
        self.clean = cfg.released_code.clean

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        if z.labels is None:
            raise ConfigError("the released-code strategy needs each sample's true class; pass labels")
        labels = z.labels.view(-1, 1)
        c_adv = z.teacher_adv.detach().float().gather(1, labels).squeeze(1) / z.teacher_scale
        c_org = z.teacher_clean.detach().float().gather(1, labels).squeeze(1) / z.teacher_scale
        classes = z.teacher_adv.shape[-1]
        return self.adv * c_adv / classes, self.clean * c_org / classes

    def __call__(self, z: DistillLogits) -> dict[str, torch.Tensor]:
        return super().__call__(replace(z, lambda_adv=1.0, lambda_org=1.0))  # the constants live in the weights


OPTION_SECTIONS = {
    "confidence": "confidence",
    "static": "static",
    "adaptive-norm": "adaptive_norm",
    "released-code": "released_code",
}


def check_strategy_options(cfg: StrategyConfig) -> None:
    """Options set for a strategy that is not the one running are a mistake, not a no-op."""
    STRATEGIES.get(cfg.name)
    default = StrategyConfig()
    for strategy, section in OPTION_SECTIONS.items():
        if strategy != cfg.name and getattr(cfg, section) != getattr(default, section):
            raise ConfigError(
                f"loss.strategy.{section} options are set but the strategy is {cfg.name!r}, which ignores them; "
                f"set loss.strategy.name={strategy} or drop the loss.strategy.{section}.* settings"
            )


def build_strategy(cfg: StrategyConfig) -> WeightingStrategy:
    """The strategy ``cfg.name`` with its own options."""
    check_strategy_options(cfg)
    return STRATEGIES.get(cfg.name)(cfg)  # type: ignore[call-arg]
