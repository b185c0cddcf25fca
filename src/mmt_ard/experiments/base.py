"""What every experiment shares: the context it runs in, its result, and the table helpers."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmt_ard.evaluation import EvalConfig, ModelResult
from mmt_ard.evaluation.config import eps_key
from mmt_ard.experiments.presets import Preset
from mmt_ard.experiments.stats import SIGNIFICANT, paired_difference, summarize
from mmt_ard.experiments.store import Run, RunStore

log = logging.getLogger(__name__)

ABLATION_EPS = 2 / 255  # the paper's Tables 2-4 report racc at 2/255 (Table 1's 2/255 column)

# the single-teacher baseline of Table 1: adversarial teacher only, no cross-modal term
BASELINE = {"loss.strategy.name": "adv-only", "loss.gamma": 0.0}
MMT_ARD: dict[str, Any] = {}  # the preset's recipe as it is (confidence, gamma 1)


@dataclass
class Result:
    """Tables, figures and findings of one experiment (the ``results.json`` contract of the report)."""

    tables: list[dict[str, Any]] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    radar: list[dict[str, Any]] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # raw numbers (per seed)


@dataclass
class Context:
    """An experiment's view of the preset, the shared run store, the seeds and its output folder."""

    preset: Preset
    store: RunStore
    seeds: list[int]
    out: Path

    def runs(self, student: str, label: str, overrides: dict[str, Any]) -> list[Run]:
        """One run of ``student``'s recipe with ``overrides`` per seed (paired: same seeds for every method)."""
        recipe = self.preset.recipe(student)
        return [self.store.distill(f"{student}-{label}", self.store.config(recipe, overrides, s)) for s in self.seeds]

    def eval_config(self, eps: Sequence[float] | None = None) -> EvalConfig:
        """The preset's test evaluation; at other ``eps`` (the ablations) without the zero-shot sets,
        which only Table 1 reports."""
        cfg = self.preset.test_eval
        return replace(cfg, eps=list(eps), zero_shot=[], zero_shot_eps=[]) if eps is not None else replace(cfg)

    def scores(self, runs: Sequence[Run], eps: Sequence[float] | None = None) -> list[dict[str, float]]:
        # ``eps=None``: Table 1's full evaluation (every eps, zero-shot)
        """Flat metrics (acc, racc/e, sum_acc/e, clip_zero) of each run's student on the test set."""
        cfg = self.eval_config(eps)
        return [flat_scores(self.store.evaluate(r.path.name, r.student, cfg)) for r in runs]

    def original_scores(self, student: str, eps: Sequence[float] | None = None) -> dict[str, float]:
        spec = self.preset.original(student)
        return flat_scores(self.store.evaluate(f"{student}-original", spec, self.eval_config(eps)))


def flat_scores(result: ModelResult) -> dict[str, float]:
    """:meth:`ModelResult.flat` (``acc``, ``racc/2/255``, ``sum_acc/2/255``, ...) and ``clip_zero`` (mean
    clean zero-shot accuracy)."""
    flat = result.flat()
    if result.zero_shot:
        flat["clip_zero"] = sum(result.zero_shot.values()) / len(result.zero_shot)
    return flat


def cells(values: Sequence[float], reference: Sequence[float] | None = None) -> dict[str, Any]:
    """A mean +- std cell, marked when its paired difference to ``reference`` is significant."""
    mark = ""
    if reference is not None and reference is not values and list(reference) != list(values):
        mark = SIGNIFICANT if paired_difference(values, reference).significant else ""
    return summarize(values).cell(mark)


def column(scores: Sequence[dict[str, float]], key: str) -> list[float]:
    return [s[key] for s in scores]


def comparison_table(
    table_id: str,
    title: str,
    rows: dict[str, list[dict[str, float]]],
    reference: str,
    eps: float = ABLATION_EPS,
    extra: Callable[[str], list[Any]] | None = None,
    extra_columns: Sequence[str] = (),
) -> dict[str, Any]:
    """Rows = variants; acc, racc, sum-acc at ``eps`` (mean +- std over seeds) and the paired
    sum-acc difference to ``reference`` (mean +- SE, significant or not)."""
    e = eps_key(eps)
    metrics = ["acc", f"racc/{e}", f"sum_acc/{e}"]
    columns = ["variant", *extra_columns, "acc", f"racc {e}", f"sum-acc {e}", f"Δ sum-acc vs {reference} (±SE)"]
    ref = rows[reference]
    body = []
    for label, scores in rows.items():
        row: list[Any] = [label, *(extra(label) if extra else [])]
        row += [cells(column(scores, m), column(ref, m)) for m in metrics]
        if label == reference:
            row.append("reference")
        else:
            d = paired_difference(column(scores, metrics[2]), column(ref, metrics[2]))
            se = "n/a (1 seed)" if d.n < 2 else f"{d.se:.2f}"
            row.append(f"{d.mean:+.2f} ± {se}{' ' + SIGNIFICANT if d.significant else ''}")
        body.append(row)
    n = len(next(iter(rows.values())))
    return {
        "id": table_id,
        "title": title,
        "columns": columns,
        "rows": body,
        "notes": [
            (
                f"Test set, racc at {e}; mean ± std over {n} paired seed(s). {SIGNIFICANT}: the paired "
                f"difference to {reference} exceeds twice its standard error."
            )
        ],
    }


def verdict(name: str, a: Sequence[float], b: Sequence[float], what: str, paired: bool = True) -> str:
    """One sentence on the difference of ``what`` between ``name`` and its reference: paired seeds, or
    (``paired=False``) against one fixed model, where only ``a`` varies."""
    d = paired_difference(a, b)
    if d.n < 2:
        return f"{name}: {what} {d.mean:+.2f} (one seed: no significance claim)."
    word = "significant" if d.significant else "not significant"
    how = f"SE over {d.n} paired seeds" if paired else f"SE over {d.n} seeds against one fixed model"
    return f"{name}: {what} {d.mean:+.2f} ± {d.se:.2f} ({how}), {word} at 2 SE."
