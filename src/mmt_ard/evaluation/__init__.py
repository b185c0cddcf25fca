"""Evaluation: clean, robust and zero-shot accuracy, the named attack protocols, typed results, the tables.

Modules, bottom up (each imports only modules before it; ``tests/unit/test_import_graph.py`` checks that no
import closes a circle):
``protocols`` (settings sections, named protocols) -> ``chain`` (the attack registry) -> ``config``
(:class:`EvalConfig`, eps keys) -> ``results`` (:class:`ModelResult`, ``results.json``) -> ``attacks``
(the per-sample chain, ``pgd``) -> ``autoattack`` (pyautoattack's attacks and the protocols, registered
here on import) and ``sanity`` -> ``metrics`` (:func:`evaluate_model`) -> ``tables`` (one builder per
table: :func:`build_table1`, :func:`build_zero_shot`, :func:`build_attack_gap`, :func:`build_sanity`)
-> ``run`` (``mmt-ard evaluate``: :class:`EvaluateConfig`,
:func:`run_evaluate`).
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
from mmt_ard.evaluation.results import ModelResult, read_results, results_from_dict, write_results
from mmt_ard.evaluation.run import EvaluateConfig, results_markdown, run_evaluate
from mmt_ard.evaluation.tables import (
    build_attack_gap,
    build_sanity,
    build_table1,
    build_zero_shot,
    evaluation_tables,
)

__all__ = [
    "PROTOCOLS",
    "APGDSettings",
    "EvalConfig",
    "EvaluateConfig",
    "ModelResult",
    "PGDSettings",
    "SquareSettings",
    "TargetedSettings",
    "accuracy_under_attack",
    "build_attack_gap",
    "build_sanity",
    "build_table1",
    "build_zero_shot",
    "check_datasets",
    "eps_key",
    "evaluate_model",
    "evaluate_models",
    "evaluation_tables",
    "read_results",
    "results_from_dict",
    "results_markdown",
    "run_evaluate",
    "validation_eval",
    "write_results",
]
