"""Weighting strategies: how the two teachers' KL terms combine (METHOD.md section 3.1).

Every strategy sees the logits of one step (:class:`DistillLogits`) and returns the
distillation loss with its named parts. Shared notation, per sample i, temperature t::

    L_clean_i = t^2 KL( softmax(z_Torg(x_i)/t)  || softmax(z_S(x_i)/t) )
    L_adv_i   = t^2 KL( softmax(z_Tadv(x'_i)/t) || softmax(z_S(x'_i)/t) )
    L_kd      = mean_i [ lambda_org w_clean_i L_clean_i + lambda_adv w_adv_i L_adv_i ]

Strategies differ in ``w`` (``average`` instead distills one mixed target on x'). Weights are
always detached. A stateful strategy (``adaptive-norm``) saves its state with the checkpoint.

A strategy is one class, which owns everything about it: a subclass of :class:`WeightingStrategy`
in this module declares its ``name`` (the ``loss.strategy.name`` value) and, if it has options, an
``Options`` dataclass; defining it registers it. The config section ``loss.strategy.<name with _>``
(:data:`StrategyConfig`), :data:`OPTION_SECTIONS` and :func:`check_strategy_options` are derived
from the registered classes, and every strategy goes through the template :meth:`WeightingStrategy.__call__`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, make_dataclass
from typing import Any, ClassVar

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


class WeightingStrategy(ABC):
    """Turns one step's logits into the distillation loss and its named terms.

    A subclass sets ``name`` (registering it) and, when it has options, ``Options`` (a dataclass whose
    defaults are the method's; an optional ``validate()`` refuses bad values). It implements
    :meth:`weights`, and :meth:`combine` where its loss is not the two weighted paths of METHOD.md 3.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type | None] = None
    convex: ClassVar[bool] = True  # w_adv, w_clean in [0, 1] with w_adv + w_clean = 1 per sample

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # a concrete strategy: register it under its name
            STRATEGIES.register(cls.name)(cls)
            _DECLARED.append(cls)

    @classmethod
    def section(cls) -> str:
        """Its options' config section: ``loss.strategy.<section>.*`` (the name with ``_`` for ``-``)."""
        return cls.name.replace("-", "_")

    def __init__(self, options: Any = None) -> None:
        if self.Options is None:
            if options is not None:
                raise ConfigError(f"the {self.name!r} strategy has no options, got {options!r}")
        else:
            options = self.Options() if options is None else options
            validate_options(options)
        self.options = options

    def __call__(self, z: DistillLogits) -> dict[str, torch.Tensor]:
        """The template every strategy runs: both paths' per-sample KL, detached weights, the loss."""
        l_clean = kd_kl(z.teacher_clean, z.student_clean, z.temperature)  # (B,)
        l_adv = kd_kl(z.teacher_adv, z.student_adv, z.temperature)  # (B,)
        w_adv, w_clean = self.weights(z, l_clean, l_adv)
        w_adv, w_clean = w_adv.detach(), w_clean.detach()
        loss, extra = self.combine(z, l_clean, l_adv, w_adv, w_clean)
        # the spread of the per-sample weights (does DIW move them?): 10th and 90th percentile of the batch
        w = w_adv.float().reshape(-1)
        q10, q90 = torch.quantile(w, 0.1), torch.quantile(w, 0.9)  # python levels: no host-to-device copy
        return {
            "loss_kd": loss,
            **extra,
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

    def combine(
        self, z: DistillLogits, l_clean: torch.Tensor, l_adv: torch.Tensor, w_adv: torch.Tensor, w_clean: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch loss ``mean_i [lambda_org w_clean_i L_clean_i + lambda_adv w_adv_i L_adv_i]`` and extra terms."""
        return (z.lambda_org * w_clean * l_clean + z.lambda_adv * w_adv * l_adv).mean(), {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


STRATEGIES: Registry[type[WeightingStrategy]] = Registry("weighting strategy")
_DECLARED: list[type[WeightingStrategy]] = []  # in declaration order: the order of the config's sections
DEFAULT_STRATEGY = "confidence"


def validate_options(options: Any) -> None:
    """An options dataclass's own check (``validate()``), where it has one."""
    check = getattr(options, "validate", None)
    if check is not None:
        check()


class AdvOnly(WeightingStrategy):
    """The single-teacher baseline: only the adversarial teacher on x'."""

    name = "adv-only"

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        return torch.ones_like(l_adv), torch.zeros_like(l_clean)


class Confidence(WeightingStrategy):
    """Dynamic importance weighting from the teachers' confidences (eqs. 3-6)."""

    name = "confidence"

    @dataclass
    class Options:
        """DIW (eqs. 3-6): ``w_adv = sigmoid(slope * (conf_adv / (conf_org + 1e-5) - offset))``."""

        slope: float = 5.0
        offset: float = 1.0  # equal teacher confidence gives equal weights

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        rho = confidence(z.teacher_adv) / (confidence(z.teacher_clean) + 1e-5)  # eq. (4)
        w_adv = torch.sigmoid(self.options.slope * (rho - self.options.offset))  # eq. (5)
        return w_adv, 1.0 - w_adv  # eq. (6)


class Static(WeightingStrategy):
    """Fixed weights for the whole run (Table 3 "Dual-KL", Table 4 sweep)."""

    name = "static"

    @dataclass
    class Options:
        """Fixed ``(w_adv, w_clean) = (a, 1 - a)``."""

        a: float = 0.5

        def validate(self) -> None:
            if not 0.0 <= self.a <= 1.0:
                raise ConfigError(f"strategy.static.a must be in [0, 1], got {self.a}")

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        a = self.options.a
        return torch.full_like(l_adv, a), torch.full_like(l_clean, 1.0 - a)


class Average(WeightingStrategy):
    """Table 2 "Average": one KL on x' towards the mean of the two teachers' distributions.

    The clean teacher's distribution is taken on x (its own input, as in every strategy); the
    loss is ``lambda_adv * t^2 KL(mean target || softmax(z_S(x')/t))``, batch mean. The two paths'
    KL terms are logged for comparison with the other strategies; they are not in the loss.
    """

    name = "average"

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        return torch.full_like(l_adv, 0.5), torch.full_like(l_clean, 0.5)  # the mixing weights

    def combine(self, z, l_clean, l_adv, w_adv, w_clean):  # type: ignore[no-untyped-def]
        t = z.temperature
        target = 0.5 * (F.softmax(z.teacher_adv.float() / t, -1) + F.softmax(z.teacher_clean.float() / t, -1))
        l_mix = kl_per_sample(target.detach(), F.log_softmax(z.student_adv.float() / t, -1)) * (t * t)
        return z.lambda_adv * l_mix.mean(), {"kl_mix": l_mix.mean()}


class AdaptiveNorm(WeightingStrategy):
    """MTARD (ECCV 2022): the path whose loss fell less (relative to step 1) gains weight."""

    name = "adaptive-norm"

    @dataclass
    class Options:
        """MTARD's adaptive normalization: ``eta`` (decayed with the LR) and the power ``beta``."""

        eta: float = 0.025
        beta: float = 1.0

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.w_clean = 0.5
        self.initial: tuple[float, float] | None = None  # (L0_clean, L0_adv)

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        eta, beta = self.options.eta, self.options.beta
        now = (float(l_clean.detach().mean()), float(l_adv.detach().mean()))
        if self.initial is None:
            self.initial = now
        r_clean = (now[0] / max(self.initial[0], 1e-12)) ** beta
        r_adv = (now[1] / max(self.initial[1], 1e-12)) ** beta
        target = r_clean / max(r_clean + r_adv, 1e-12)
        self.w_clean -= eta * z.lr_scale * (self.w_clean - target)
        return torch.full_like(l_adv, 1.0 - self.w_clean), torch.full_like(l_clean, self.w_clean)

    def state_dict(self) -> dict[str, Any]:
        return {"w_clean": self.w_clean, "initial": list(self.initial) if self.initial else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w_clean = float(state["w_clean"])
        self.initial = tuple(state["initial"]) if state["initial"] is not None else None  # type: ignore[assignment]


class ReleasedCode(WeightingStrategy):
    """What the authors' released code does instead of DIW (METHOD.md 3.1, itsnotacie/MMT-ARD).

    Per sample, ``c`` is the cosine between a teacher's normalized image embedding and its own text
    embedding of the *true* class (``z_T[i, y_i] / s``): the adversarial teacher's on x', the clean
    teacher's on x. The element-wise KL terms are averaged over batch and classes, which is the
    per-sample KL divided by C::

        L_kd = mean_i [ adv * c_adv_i * KL_adv_i + clean * c_org_i * KL_clean_i ] / C

    with ``adv = 50``, ``clean = 5``. ``loss.lambda_*`` and the sigmoid of DIW play no part.
    """

    name = "released-code"
    convex = False  # 50 c_adv / C and 5 c_org / C

    @dataclass
    class Options:
        """The released code's constants: ``adv * c_adv * KL_adv + clean * c_org * KL_clean``, over classes."""

        adv: float = 50.0
        clean: float = 5.0

    def weights(self, z, l_clean, l_adv):  # type: ignore[no-untyped-def]
        if z.labels is None:
            raise ConfigError("the released-code strategy needs each sample's true class; pass labels")
        labels = z.labels.view(-1, 1)
        c_adv = z.teacher_adv.detach().float().gather(1, labels).squeeze(1) / z.teacher_scale
        c_org = z.teacher_clean.detach().float().gather(1, labels).squeeze(1) / z.teacher_scale
        classes = z.teacher_adv.shape[-1]
        return self.options.adv * c_adv / classes, self.options.clean * c_org / classes

    def combine(self, z, l_clean, l_adv, w_adv, w_clean):  # type: ignore[no-untyped-def]
        return (w_clean * l_clean + w_adv * l_adv).mean(), {}  # the constants live in the weights: no lambdas


# ---- derived from the declared strategies: the config section, its option sections, the check ----

WITH_OPTIONS = [cls for cls in _DECLARED if cls.Options is not None]
OPTION_SECTIONS = {cls.name: cls.section() for cls in WITH_OPTIONS}  # strategy name -> its config section

StrategyConfig: Any = make_dataclass(
    "StrategyConfig",
    [
        ("name", str, field(default=DEFAULT_STRATEGY)),
        *[(cls.section(), cls.Options, field(default_factory=cls.Options)) for cls in WITH_OPTIONS],
    ],
    namespace={"__module__": __name__},
)
StrategyConfig.__doc__ = (
    "``loss.strategy``: ``name`` picks the strategy; each strategy reads only its own options section "
    f"({', '.join(OPTION_SECTIONS.values())}), built from the declared strategies."
)


def strategy_options(cfg: Any) -> Any:
    """The options section of the strategy ``cfg.name`` (``None`` for a strategy without options)."""
    cls = STRATEGIES.get(cfg.name)
    return getattr(cfg, cls.section()) if cls.Options is not None else None


def check_strategy_options(cfg: Any) -> None:
    """Options set for a strategy that is not the one running are a mistake, not a no-op; the running
    strategy's own options are checked."""
    STRATEGIES.get(cfg.name)
    for cls in WITH_OPTIONS:
        section = cls.section()
        if cls.name != cfg.name and getattr(cfg, section) != cls.Options():  # type: ignore[misc]
            raise ConfigError(
                f"loss.strategy.{section} options are set but the strategy is {cfg.name!r}, which ignores them; "
                f"set loss.strategy.name={cls.name} or drop the loss.strategy.{section}.* settings"
            )
    options = strategy_options(cfg)
    if options is not None:
        validate_options(options)


def build_strategy(cfg: Any) -> WeightingStrategy:
    """The strategy ``cfg.name`` (a :data:`StrategyConfig`) with its own options."""
    check_strategy_options(cfg)
    return STRATEGIES.get(cfg.name)(strategy_options(cfg))
