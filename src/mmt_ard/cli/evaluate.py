"""``mmt-ard evaluate``: the results table for one or more models."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmt_ard.config import to_dict
from mmt_ard.distributed import barrier
from mmt_ard.errors import UserError
from mmt_ard.evaluation import EvalConfig, check_datasets, evaluate_models, markdown_table
from mmt_ard.evaluation.clip_benchmark_json import write_benchmark_json
from mmt_ard.evaluation.sanity import sanity_markdown
from mmt_ard.io import atomic_write_json, atomic_write_text
from mmt_ard.models import ModelSpec, TextHeadCache, default_cache_dir, load_clip
from mmt_ard.models.export import resolve_weights
from mmt_ard.training.loop import LoopConfig, resolve_device


@dataclass
class EvaluateConfig:
    """Models by name (``name: {arch, pretrained, vision}``), what to measure, where to write."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    output: str = "runs/evaluate"
    eval: EvalConfig = field(default_factory=EvalConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    clip_benchmark_json: bool = False  # also OUTPUT/clip_benchmark/*.json, one per model x data set


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Evaluate every model; write ``results.json`` and ``results.md`` into ``cfg.output``.

    Under torchrun every data set is sharded over the processes and the hits summed.
    """
    if not cfg.models:
        raise UserError("no models to evaluate; pass --model NAME=ARCH@WEIGHTS (repeatable)")
    cfg.eval.validate()
    check_datasets(cfg.eval)  # a bad spec or an attack a data set cannot take: an error before any model loads
    device = resolve_device(cfg.loop.device)
    out = Path(cfg.output)
    own_state = cfg.eval.state_dir is None
    if own_state:  # AutoAttack state under the output, keyed by what the numbers depend on
        cfg.eval.state_dir = str(out / "autoattack-state" / _fingerprint(cfg))
    models = {name: load_clip(spec, device=device) for name, spec in cfg.models.items()}
    results = evaluate_models(models, cfg.eval, heads=TextHeadCache(default_cache_dir()), device=device)
    atomic_write_json(out / "results.json", results)
    protocol = cfg.eval.protocol_note() + "\n\n" if cfg.eval.eps else ""
    atomic_write_text(out / "results.md", protocol + markdown_table(results) + sanity_markdown(results))
    if cfg.clip_benchmark_json:
        archs = {name: model.arch for name, model in models.items()}
        write_benchmark_json(results, archs, cfg.eval.dataset, out / "clip_benchmark")
    if own_state:  # finished: the state would only go stale
        shutil.rmtree(out / "autoattack-state", ignore_errors=True)
    barrier()  # under torchrun: rank 0's files exist before any rank reads them
    return results


def _fingerprint(cfg: EvaluateConfig) -> str:
    """Eval config, model specs and weight files (size, mtime): a resumed run must attack the same thing."""
    files = []
    for spec in cfg.models.values():
        for p in (spec.pretrained, spec.vision):
            path = resolve_weights(p) if p else None
            stat = path.stat() if path is not None and path.exists() else None
            files.append([p, stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0])
    key = json.dumps(
        {"eval": to_dict(cfg.eval), "models": {k: to_dict(v) for k, v in cfg.models.items()}, "files": files},
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:12]
