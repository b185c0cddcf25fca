"""What an evaluation runs: :class:`EvalConfig` with one settings section per attack, its checks, and
the eps keys of result files (``2/255``).

The sections and the named protocols are defined in :mod:`mmt_ard.evaluation.protocols`; the attacks
a chain may name are the registry of :mod:`mmt_ard.evaluation.chain`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from mmt_ard.attacks import PGDConfig
from mmt_ard.errors import ConfigError
from mmt_ard.evaluation.chain import attack_names
from mmt_ard.evaluation.protocols import (
    MIN_CLASSES,
    SECTIONS,
    APGDSettings,
    PGDSettings,
    SquareSettings,
    TargetedSettings,
    base_attacks,
    check_fixed,
    describe,
    summary,
)


@dataclass
class EvalConfig:
    """What to evaluate. ``eps`` in pixels (write ``2/255``); ``step_size=None`` means eps/4."""

    dataset: str = "builtin:shapes:split=test"
    zero_shot: list[str] = field(default_factory=lambda: ["builtin:combos:split=test", "builtin:outlines:split=test"])
    eps: list[float] = field(default_factory=lambda: [1 / 255, 2 / 255, 3 / 255, 4 / 255])
    norm: str = "linf"
    zero_shot_eps: list[float] = field(default_factory=list)
    limit: int | None = None
    batch_size: int = 250
    seed: int = 0
    # attacks (evaluation/attacks.py): one name or several joined by '+', run per sample in order;
    # a protocol (autoattack, autoattack-standard) has fixed settings, see evaluation/protocols.py
    attack: str = "pgd"  # pgd | apgd-ce | apgd-t | fab-t | square | autoattack | autoattack-standard
    pgd: PGDSettings = field(default_factory=PGDSettings)
    apgd_ce: APGDSettings = field(default_factory=APGDSettings)
    apgd_t: TargetedSettings = field(default_factory=TargetedSettings)
    fab_t: TargetedSettings = field(default_factory=TargetedSettings)
    square: SquareSettings = field(default_factory=SquareSettings)
    state_dir: str | None = None  # AutoAttack state files: an interrupted evaluation resumes
    skip_unrunnable: bool = False  # run a chain without an attack the task cannot take (APGD-T below 4 classes)
    # sanity checks (evaluation/sanity.py) on a small subset at the largest eps
    sanity: bool = True
    sanity_samples: int = 64
    sanity_eps: float = 64 / 255  # "a large eps": accuracy should fall to about chance
    sanity_margin: float = 10.0  # percent above chance still accepted at sanity_eps
    sanity_tolerance: float = 2.0  # percent a stronger attack may lose to a weaker one (subset noise)
    workers: int = 0  # DataLoader processes decoding images read from disk

    # keys of earlier versions: a config that still uses one gets told where it went
    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "steps": "pgd.steps",
        "step_size": "pgd.step_size",
        "random_start": "pgd.random_start",
        "restarts": "pgd.restarts (PGD) or apgd_ce.restarts / apgd_t.restarts (APGD)",
        "apgd_iterations": "apgd_ce.iterations and apgd_t.iterations",
        "n_target_classes": "apgd_t.targets",
    }

    def sections(self) -> dict[str, Any]:
        """Each attack's settings by section name (``pgd``, ``apgd_ce``, ...)."""
        return {section: getattr(self, section) for section, _ in SECTIONS.values()}

    def protocol_record(self) -> dict[str, Any]:
        """What ``results.json`` records as ``protocol`` (see :func:`~mmt_ard.evaluation.protocols.describe`)."""
        return describe(attack_names(self.attack), self.sections(), self.norm, self.seed)

    def protocol_note(self) -> str:
        """The line every racc table carries: the chain with its settings, the norm, the data and its size."""
        images = f"{self.limit} images" if self.limit else "every image"
        chain = summary(attack_names(self.attack), self.sections())
        return f"racc: per-sample worst case under {chain}, {self.norm}, on `{self.dataset}` ({images})."

    def pgd_config(self, eps: float) -> PGDConfig:
        p = self.pgd
        return PGDConfig(
            norm=self.norm,
            eps=eps,
            steps=p.steps,
            step_size=p.step_size,  # type: ignore[arg-type]
            random_start=p.random_start,
        )

    def validate(self) -> None:
        for e in [*self.eps, *self.zero_shot_eps]:
            self.pgd_config(e).validate()
        for name, values in (("eps", self.eps), ("zero_shot_eps", self.zero_shot_eps)):
            keys = [eps_key(e) for e in values]
            if len(set(keys)) != len(keys):
                raise ConfigError(f"eval.{name} lists the same eps twice: {keys}")
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"eval norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"eval limit must be a positive number of samples, got {self.limit}")
        validate_attack_options(self)


def eps_key(eps: float) -> str:
    """``2/255`` for 0.00784..., else the float as written."""
    k = round(eps * 255)
    if k > 0 and abs(k / 255 - eps) < 1e-9:
        return f"{k}/255"
    return f"{eps:g}"


def pct(hits: int, total: int) -> float:
    return round(100.0 * hits / max(total, 1), 2)


def unrunnable_attacks(cfg: EvalConfig, num_classes: int, where: str) -> list[str]:
    """The attacks of ``cfg.attack`` that cannot run on ``num_classes`` classes; an error unless allowed.

    With ``eval.skip_unrunnable=true`` the chain runs without them (APGD-T's part of ``autoattack``
    is dropped, its APGD-CE still runs) and the caller records the names in the results.
    """
    names = attack_names(cfg.attack)
    bad = [a for n in names for a in base_attacks(n) if num_classes < MIN_CLASSES.get(a, 2)]
    runnable = [a for n in names for a in base_attacks(n) if num_classes >= MIN_CLASSES.get(a, 2)]
    if bad and cfg.skip_unrunnable and not runnable:
        raise ConfigError(
            f"eval.attack={cfg.attack!r} cannot run on {where} ({num_classes} classes) and nothing "
            "else is in the chain: its robust accuracy would be the clean accuracy. Use eval.attack="
            "pgd or apgd-ce there"
        )
    if bad and not cfg.skip_unrunnable:
        needs = ", ".join(f"{a.upper()} needs at least {MIN_CLASSES[a]} classes" for a in dict.fromkeys(bad))
        raise ConfigError(
            f"eval.attack={cfg.attack!r} cannot run on {where} ({num_classes} classes): {needs} (APGD-T's targeted "
            "DLR loss reads the 4th-largest logit). Use eval.attack=pgd or apgd-ce there, or "
            "eval.skip_unrunnable=true to run the chain without it (the results then list it under skipped_attacks)"
        )
    return list(dict.fromkeys(bad))


def validate_attack_options(cfg: EvalConfig) -> None:
    """The attack sections of ``EvalConfig``: names, budgets, fixed protocols and sanity-check sizes."""
    names = attack_names(cfg.attack)
    for section, settings in cfg.sections().items():
        for key, value in vars(settings).items():
            if key in ("steps", "restarts", "iterations", "targets", "queries") and value < 1:
                raise ConfigError(f"eval.{section}.{key} must be at least 1, got {value}")
    if not 0.0 < cfg.square.p_init <= 1.0:
        raise ConfigError(f"eval.square.p_init must be in (0, 1], got {cfg.square.p_init}")
    if cfg.sanity_samples < 1:
        raise ConfigError(f"eval.sanity_samples must be at least 1, got {cfg.sanity_samples}")
    if not 0.0 < cfg.sanity_eps <= 1.0:
        raise ConfigError(f"eval.sanity_eps must be in (0, 1] (pixels), got {cfg.sanity_eps}; write e.g. 64/255")
    check_fixed(names, cfg.sections())


def validation_eval(dataset: str = "builtin:shapes:split=val", eps: float = 2 / 255) -> EvalConfig:
    """Training-time validation: PGD-5 at one eps on a held-out split, no zero-shot, no sanity checks."""
    return EvalConfig(dataset=dataset, zero_shot=[], eps=[eps], pgd=PGDSettings(steps=5), limit=500, sanity=False)


def upgrade_saved_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run's saved config (``config.yaml``'s ``config``) with an ``eval`` section written before the
    per-attack sections (``eval.steps``...) in today's shape, where that is exact: a PGD-only chain (APGD
    shared ``eval.restarts`` with PGD, so an APGD chain has no exact translation and is left as it was).
    Lets a finished stage of an earlier version be recognised instead of retrained."""
    section = config.get("eval")
    if not isinstance(section, dict) or not set(section) & set(EvalConfig.MOVED_KEYS):
        return config
    if section.get("attack", "pgd") != "pgd":
        return config
    from mmt_ard.config import to_dict

    pgd = PGDSettings(
        steps=section.get("steps", 10),
        step_size=section.get("step_size"),
        restarts=section.get("restarts", 1),
        random_start=section.get("random_start", True),
    )
    new = {k: v for k, v in section.items() if k not in EvalConfig.MOVED_KEYS}
    new.update({k: v for k, v in to_dict(EvalConfig()).items() if k in dict(SECTIONS.values())}, pgd=to_dict(pgd))
    return {**config, "eval": new}
