"""The evaluation attacks a chain may name, by name: the registry every attack module adds to.

``EvalConfig.attack`` names one attack or several joined by ``+``; :func:`attack_names` splits and
checks it. ``pgd`` registers in :mod:`~mmt_ard.evaluation.attacks`, the pyautoattack attacks and the
protocols in :mod:`~mmt_ard.evaluation.autoattack` (imported by the package, so the registry is
complete whenever :mod:`mmt_ard.evaluation` is).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmt_ard.errors import ConfigError
from mmt_ard.registry import Registry


@dataclass
class AttackContext:
    """Where an attack may keep resumable state: ``state_dir/<tag>-b<batch>-eps<k>.json``."""

    state_dir: Path | None = None
    tag: str = "model"
    batch: int = 0


# (classifier, x, y, eps, cfg: EvalConfig, generator, ctx) -> (B,) bool: still correct
EvalAttack = Callable[[Any, torch.Tensor, torch.Tensor, float, Any, torch.Generator, AttackContext], torch.Tensor]
EVAL_ATTACKS: Registry[EvalAttack] = Registry("evaluation attack")


def attack_names(spec: str) -> list[str]:
    """``"pgd+autoattack"`` -> ``["pgd", "autoattack"]``, each checked against the registry."""
    names = [n.strip() for n in spec.split("+") if n.strip()]
    if not names:
        raise ConfigError(f"eval.attack is empty; choose from {', '.join(EVAL_ATTACKS.names())} (join with '+')")
    for name in names:
        EVAL_ATTACKS.get(name)  # a UserError listing the choices
    if len(set(names)) != len(names):
        raise ConfigError(f"eval.attack {spec!r} names an attack twice")
    return names
