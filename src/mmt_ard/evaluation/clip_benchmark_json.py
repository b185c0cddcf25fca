"""Results as CLIP_benchmark JSON: one file per model x data set, so they join tables built with it.

CLIP_benchmark's ``eval`` writes ``{dataset}_{pretrained}_{model}_{language}_{task}.json`` holding
``{"dataset", "model", "pretrained", "task", "metrics": {"acc1", ...}, "language"}`` with accuracies
as fractions; its ``build`` command collects such files into a CSV. Here ``model`` is the open_clip
architecture and ``pretrained`` the name the model was evaluated under (``--model NAME=...``);
robust accuracies, where measured, come as ``metrics.robust_acc1`` ``{eps: fraction}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmt_ard.config import expand_env
from mmt_ard.data.datasets import DatasetSpec
from mmt_ard.evaluation.results import ModelResult
from mmt_ard.io import atomic_write_json

TASK = "zeroshot_classification"


def dataset_name(spec: str) -> str:
    """The name a data set spec's results are filed under (as its data set reports it)."""
    parsed = DatasetSpec.parse(expand_env(spec))
    if parsed.kind in ("folder", "wds"):
        return Path(parsed.name).name.split("{")[0].rstrip("-_") or parsed.kind
    return parsed.name


def benchmark_records(result: ModelResult, main_dataset: str, arch: str, name: str) -> list[dict[str, Any]]:
    """CLIP_benchmark records of one model's :func:`~mmt_ard.evaluation.evaluate_model` result."""
    rows = [(main_dataset, result.acc, result.racc)]
    robust_zero_shot = result.zero_shot_racc or {}
    rows += [(ds, acc, robust_zero_shot.get(ds, {})) for ds, acc in result.zero_shot.items()]
    records = []
    for dataset, acc, racc in rows:
        metrics: dict[str, Any] = {"acc1": acc / 100}
        if racc:
            metrics["robust_acc1"] = {eps: v / 100 for eps, v in racc.items()}
        records.append(
            {"dataset": dataset, "model": arch, "pretrained": name, "task": TASK, "metrics": metrics, "language": "en"}
        )
    return records


def write_benchmark_json(
    results: Mapping[str, ModelResult], archs: Mapping[str, str], main_spec: str, folder: str | Path
) -> list[Path]:
    """Write every model x data set record into ``folder``; returns the files (rank 0 writes)."""
    written = []
    for name, result in results.items():
        for record in benchmark_records(result, dataset_name(main_spec), archs[name], name):
            slug = "_".join(s.replace("/", "_") for s in (record["dataset"], name, archs[name], "en", TASK))
            written.append(atomic_write_json(Path(folder) / f"{slug}.json", record))
    return written
