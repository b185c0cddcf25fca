"""Evaluation protocols: each attack's settings section and the named, fixed protocols.

Every attack has its own config section, so raising one budget never changes another:

============  =================  =========================================================
attack        section            settings (defaults)
============  =================  =========================================================
``pgd``       ``eval.pgd``       steps 10, step_size eps/4, restarts 1, random_start
``apgd-ce``   ``eval.apgd_ce``   iterations 100, restarts 5
``apgd-t``    ``eval.apgd_t``    iterations 100, restarts 1, targets 9 (capped at C - 1)
``fab-t``     ``eval.fab_t``     iterations 100, restarts 1, targets 9 (capped at C - 1)
``square``    ``eval.square``    queries 5000, restarts 1, p_init 0.8
============  =================  =========================================================

The APGD, FAB and Square attacks are the AutoAttack authors' own (``pyautoattack``); rho 0.75 and one
EOT pass are fixed, as in AutoAttack. A *protocol* is a named chain whose settings are fixed, so its
name alone says how a number was measured (METHOD.md section 4):

- ``autoattack``: AutoAttack "custom" as FARE and the MMT-ARD authors call it,
  ``AutoAttack(version='custom', attacks_to_run=['apgd-ce', 'apgd-t'])``: the constructor's defaults,
  APGD-CE 100 iterations 5 restarts, APGD-T 100 iterations 1 restart 9 targets.
- ``autoattack-standard``: RobustBench's ``AutoAttack(version='standard')``: APGD-CE 1 restart,
  APGD-T 9 targets, FAB-T 9 targets, Square 5000 queries.

Changing a section that only a protocol of the chain would read is an error (the change would do
nothing); a chain of single attacks (``apgd-ce+apgd-t``) uses the sections and names itself by its
attacks, so a reduced chain is never called AutoAttack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mmt_ard.errors import ConfigError


@dataclass
class PGDSettings:
    """``eval.pgd``: PGD on the cross-entropy; ``step_size=None`` means eps/4."""

    steps: int = 10
    step_size: float | None = None
    restarts: int = 1
    random_start: bool = True


@dataclass
class APGDSettings:
    """``eval.apgd_ce``: APGD on the cross-entropy (AutoAttack's constructor: 100 iterations, 5 restarts)."""

    iterations: int = 100
    restarts: int = 5


@dataclass
class TargetedSettings:
    """``eval.apgd_t`` / ``eval.fab_t``: a targeted attack, ``targets`` classes capped at ``C - 1``."""

    iterations: int = 100
    restarts: int = 1
    targets: int = 9


@dataclass
class SquareSettings:
    """``eval.square``: the gradient-free Square attack (RobustBench's budget: 5000 queries)."""

    queries: int = 5000
    restarts: int = 1
    p_init: float = 0.8


# attack -> its config section and the section's type
SECTIONS: dict[str, tuple[str, type]] = {
    "pgd": ("pgd", PGDSettings),
    "apgd-ce": ("apgd_ce", APGDSettings),
    "apgd-t": ("apgd_t", TargetedSettings),
    "fab-t": ("fab_t", TargetedSettings),
    "square": ("square", SquareSettings),
}
SOURCES = {
    "pgd": "METHOD.md section 4: L-inf PGD on the cross-entropy, any iterate counts",
    "apgd-ce": "pyautoattack APGDAttack(loss='ce')",
    "apgd-t": "pyautoattack APGDAttack_targeted (targeted DLR)",
    "fab-t": "pyautoattack FABAttack_PT(targeted=True)",
    "square": "pyautoattack SquareAttack (no gradients; resc_schedule=False as in AutoAttack)",
}
# attacks that cannot run below a number of classes: targeted DLR reads the 4th-largest logit
MIN_CLASSES = {"apgd-t": 4, "fab-t": 2, "square": 2, "apgd-ce": 2, "pgd": 2}


# how several eps are attacked (metrics.py): never weaker than attacking each eps on its own
EPS_ORDER = (
    "increasing; at each eps only the samples robust at every smaller eps are attacked, and a sample broken "
    "at a smaller eps counts as broken (its adversarial example lies in the larger ball)"
)


@dataclass(frozen=True)
class Protocol:
    """A named chain of attacks with fixed settings (``fixed``: section -> settings)."""

    name: str
    attacks: tuple[str, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    source: str = ""


PROTOCOLS = {
    "autoattack": Protocol(
        "autoattack",
        ("apgd-ce", "apgd-t"),
        {"apgd_ce": APGDSettings(100, 5), "apgd_t": TargetedSettings(100, 1, 9)},
        "AutoAttack(version='custom', attacks_to_run=['apgd-ce', 'apgd-t']) as FARE and the MMT-ARD authors "
        "call it: the constructor's defaults",
    ),
    "autoattack-standard": Protocol(
        "autoattack-standard",
        ("apgd-ce", "apgd-t", "fab-t", "square"),
        {
            "apgd_ce": APGDSettings(100, 1),
            "apgd_t": TargetedSettings(100, 1, 9),
            "fab_t": TargetedSettings(100, 1, 9),
            "square": SquareSettings(5000, 1, 0.8),
        },
        "RobustBench's standard AutoAttack, AutoAttack(version='standard') for L-inf and L2",
    ),
}


def base_attacks(name: str) -> tuple[str, ...]:
    """The attacks a chain element runs: a protocol's, or the attack itself."""
    return PROTOCOLS[name].attacks if name in PROTOCOLS else (name,)


def check_fixed(names: list[str], sections: dict[str, Any]) -> None:
    """Refuse a changed section that only protocols of the chain would read: they fix it, so the change
    would do nothing while the number carried the protocol's name. A single attack of the same chain
    that reads the section (``apgd-ce+autoattack``) makes the change meaningful."""
    own = {SECTIONS[n][0] for n in names if n not in PROTOCOLS}
    for name in names:
        protocol = PROTOCOLS.get(name)
        for section, fixed in protocol.fixed.items() if protocol else ():
            if section in own or sections[section] == type(fixed)():
                continue
            raise ConfigError(
                f"eval.{section} was changed but eval.attack={'+'.join(names)!r} reads it only through the {name} "
                f"protocol, whose settings are fixed ({describe_settings(fixed)}). Drop the change, or run the "
                f"attacks under their own names with your settings: eval.attack={'+'.join(protocol.attacks)}"
            )


def settings_for(name: str, attack: str, sections: dict[str, Any]) -> Any:
    """The settings ``attack`` runs with inside chain element ``name``."""
    protocol = PROTOCOLS.get(name)
    section = SECTIONS[attack][0]
    if protocol is not None and section in protocol.fixed:
        return protocol.fixed[section]
    return sections[section]


def describe_settings(settings: Any) -> str:
    """``steps 10, step_size eps/4, ...``: a section's settings in words."""
    return ", ".join(f"{k} {'eps/4' if k == 'step_size' and v is None else v}" for k, v in asdict(settings).items())


def describe(names: list[str], sections: dict[str, Any], norm: str, seed: int) -> dict[str, Any]:
    """What ``results.json`` records: the chain, and per element its attacks, settings and source."""
    chain = []
    for name in names:
        protocol = PROTOCOLS.get(name)
        attacks = [
            {"attack": a, **asdict(settings_for(name, a, sections)), "source": SOURCES[a]} for a in base_attacks(name)
        ]
        chain.append({"name": name, "source": protocol.source if protocol else SOURCES[name], "attacks": attacks})
    return {
        "name": "+".join(names),
        "summary": summary(names, sections),
        "norm": norm,
        "seed": seed,
        "precision": "fp32",
        "model_mode": "eval",
        "eps_order": EPS_ORDER,
        "chain": chain,
    }


def summary(names: list[str], sections: dict[str, Any]) -> str:
    """One line naming each element with its settings, e.g. for a report: ``autoattack (APGD-CE ...)``."""
    parts = []
    for name in names:
        inner = "; ".join(
            f"{a.upper()} {describe_settings(settings_for(name, a, sections))}" for a in base_attacks(name)
        )
        parts.append(f"`{name}` ({inner})")
    return " then ".join(parts)
