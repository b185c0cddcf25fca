"""Evaluation: clean, robust and zero-shot accuracy, the named attack protocols, the paper-style report.

Modules, bottom up (each imports only modules before it; ``tests/test_import_graph.py`` checks that no
import closes a circle):
``protocols`` (settings sections, named protocols) -> ``chain`` (the attack registry) -> ``config``
(:class:`EvalConfig`, eps keys) -> ``attacks`` (the per-sample chain, ``pgd``) -> ``autoattack``
(pyautoattack's attacks and the protocols, registered here on import) and ``sanity`` -> ``metrics``
(evaluating models) -> ``report``.
"""

from mmt_ard.evaluation import autoattack  # noqa: F401  (registers apgd-ce, apgd-t, fab-t, square, the protocols)
from mmt_ard.evaluation.config import EvalConfig, eps_key, validation_eval
from mmt_ard.evaluation.metrics import accuracy_under_attack, check_datasets, evaluate_model, evaluate_models
from mmt_ard.evaluation.protocols import (
    PROTOCOLS,
    APGDSettings,
    PGDSettings,
    SquareSettings,
    TargetedSettings,
)
from mmt_ard.evaluation.report import attack_gap_table, markdown_table

__all__ = [
    "PROTOCOLS",
    "APGDSettings",
    "EvalConfig",
    "PGDSettings",
    "SquareSettings",
    "TargetedSettings",
    "accuracy_under_attack",
    "attack_gap_table",
    "check_datasets",
    "eps_key",
    "evaluate_model",
    "evaluate_models",
    "markdown_table",
    "validation_eval",
]
