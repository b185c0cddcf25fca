"""Evaluation: clean, robust and zero-shot accuracy, the named attack protocols, the paper-style report."""

from mmt_ard.evaluation.metrics import (
    EvalConfig,
    accuracy_under_attack,
    check_datasets,
    eps_key,
    evaluate_model,
    evaluate_models,
)
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
]
