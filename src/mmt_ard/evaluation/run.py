"""``mmt-ard evaluate``'s library half: :class:`EvaluateConfig` and :func:`run_evaluate`.

From Python::

    from mmt_ard.evaluation import EvalConfig, EvaluateConfig, run_evaluate
    from mmt_ard.models import ModelSpec

    cfg = EvaluateConfig(models={"student": ModelSpec.parse("runs/distill/student")[1]}, output="runs/eval",
                         eval=EvalConfig(eps=[2 / 255], limit=500))
    results = run_evaluate(cfg)  # {name: ModelResult}; also runs/eval/results.json and results.md
    print(results["student"].racc["2/255"])
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from mmt_ard.config import to_dict
from mmt_ard.devices import resolve_device
from mmt_ard.distributed import barrier
from mmt_ard.errors import UserError
from mmt_ard.evaluation.clip_benchmark_json import write_benchmark_json
from mmt_ard.evaluation.config import EvalConfig
from mmt_ard.evaluation.metrics import check_datasets, evaluate_models
from mmt_ard.evaluation.results import ModelResult, write_results
from mmt_ard.evaluation.tables import evaluation_tables
from mmt_ard.finished import digest
from mmt_ard.io import atomic_write_text
from mmt_ard.models import ModelSpec, TextHeadCache, default_cache_dir, load_clip
from mmt_ard.models.export import spec_stamp
from mmt_ard.tables import markdown_table


@dataclass
class EvaluateConfig:
    """Models by name (``name: {arch, pretrained, vision}``), what to measure, where and on what device."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    output: str = "runs/evaluate"
    eval: EvalConfig = field(default_factory=EvalConfig)
    device: str = "auto"  # auto | cpu | cuda | cuda:N (evaluation always runs in float32)
    clip_benchmark_json: bool = False  # also OUTPUT/clip_benchmark/*.json, one per model x data set

    # earlier versions took the device from a training loop section
    MOVED_KEYS: ClassVar[dict[str, str]] = {"loop": "device"}


def run_evaluate(cfg: EvaluateConfig) -> dict[str, ModelResult]:
    """Evaluate every model; write ``results.json`` and ``results.md`` into ``cfg.output``.

    An interrupted AutoAttack chain resumes from its state files under ``OUTPUT/autoattack-state/<key>``
    (the key: the eval config and every model's weight files; removed when the run finishes) unless
    ``eval.state_dir`` names another folder. Under torchrun every data set is sharded over the processes
    and the hits summed. ``cfg`` is left as it was.
    """
    if not cfg.models:
        raise UserError("no models to evaluate; pass --model NAME=ARCH@WEIGHTS (repeatable)")
    cfg.eval.validate()
    check_datasets(cfg.eval)  # a bad spec or an attack a data set cannot take: an error before any model loads
    device = resolve_device(cfg.device)
    out = Path(cfg.output)
    eval_cfg = cfg.eval
    own_state = eval_cfg.state_dir is None
    if own_state:  # AutoAttack state under the output, keyed by what the numbers depend on
        eval_cfg = replace(eval_cfg, state_dir=str(out / "autoattack-state" / state_key(cfg)))
    models = {name: load_clip(spec, device=device) for name, spec in cfg.models.items()}
    results = evaluate_models(models, eval_cfg, heads=TextHeadCache(default_cache_dir()), device=device)
    write_results(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(results, cfg.eval))
    if cfg.clip_benchmark_json:
        archs = {name: model.arch for name, model in models.items()}
        write_benchmark_json(results, archs, cfg.eval.dataset, out / "clip_benchmark")
    if own_state:  # finished: the state would only go stale
        shutil.rmtree(out / "autoattack-state", ignore_errors=True)
    barrier()  # under torchrun: rank 0's files exist before any rank reads them
    return results


def results_markdown(results: dict[str, ModelResult], eval_cfg: EvalConfig) -> str:
    """``results.md``: the protocol line, then every evaluation table (evaluation/tables.py)."""
    protocol = eval_cfg.protocol_note() + "\n\n" if eval_cfg.eps else ""
    return protocol + "\n".join(markdown_table(t) for t in evaluation_tables(results, protocols=False))


def state_key(cfg: EvaluateConfig) -> str:
    """The digest of what a resumed attack must attack again: the eval config and each model's
    :func:`~mmt_ard.models.export.spec_stamp` (architecture, weights files' path, size and mtime)."""
    models = {name: spec_stamp(s.arch, s.pretrained, s.vision) for name, s in cfg.models.items()}
    return digest({"eval": to_dict(cfg.eval), "models": models})
