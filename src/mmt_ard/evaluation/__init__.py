"""Evaluation: clean, robust and zero-shot accuracy, and the paper-style report."""

from mmt_ard.evaluation.metrics import (
    EvalConfig,
    accuracy_under_attack,
    check_datasets,
    eps_key,
    evaluate_model,
    evaluate_models,
)
from mmt_ard.evaluation.report import attack_gap_table, markdown_table

__all__ = ["attack_gap_table", "EvalConfig", "accuracy_under_attack", "check_datasets", "eps_key", "evaluate_model", "evaluate_models", "markdown_table"]
