"""``mmt-ard evaluate``: the results table for one or more models."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmt_ard.distributed import barrier
from mmt_ard.errors import UserError
from mmt_ard.evaluation.clip_benchmark_json import write_benchmark_json
from mmt_ard.evaluation import EvalConfig, evaluate_models, markdown_table
from mmt_ard.io import atomic_write_json, atomic_write_text
from mmt_ard.models import ModelSpec, TextHeadCache, default_cache_dir, load_clip
from mmt_ard.models.export import CONFIG
from mmt_ard.training.loop import LoopConfig, resolve_device


@dataclass
class EvaluateConfig:
    """Models by name (``name: {arch, pretrained, vision}``), what to measure, where to write."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    output: str = "runs/evaluate"
    eval: EvalConfig = field(default_factory=EvalConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    clip_benchmark_json: bool = False  # also OUTPUT/clip_benchmark/*.json, one per model x data set


def parse_model_arg(text: str) -> tuple[str, ModelSpec]:
    """``[NAME=]SPEC`` with SPEC ``ARCH[@PRETRAINED][,vision=PATH]`` or an export folder."""
    head, _, vision = text.partition(",vision=")
    name, _, spec = head.partition("=") if "=" in head else ("", "", head)
    path = Path(spec)
    if (path / CONFIG).is_file():
        arch = json.loads((path / CONFIG).read_text()).get("arch")
        if not arch:
            raise UserError(f"{str(path / CONFIG)!r} names no 'arch'; pass ARCH@{spec} instead")
        model = ModelSpec(arch=arch, pretrained=spec, vision=vision or None)
        # an export folder is named by its run: runs/x/student -> "x"
        default = path.resolve().parent.name if path.name in ("model", "student") else path.resolve().name
    else:
        arch, _, pretrained = spec.partition("@")
        if not arch:
            raise UserError(f"bad --model {text!r}; write NAME=ARCH[@WEIGHTS][,vision=PATH] or NAME=EXPORT_FOLDER")
        model = ModelSpec(arch=arch, pretrained=pretrained or None, vision=vision or None)
        default = arch
    return name or default, model


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Evaluate every model; write ``results.json`` and ``results.md`` into ``cfg.output``.

    Under torchrun every data set is sharded over the processes and the hits summed.
    """
    if not cfg.models:
        raise UserError("no models to evaluate; pass --model NAME=ARCH@WEIGHTS (repeatable)")
    cfg.eval.validate()
    device = resolve_device(cfg.loop.device)
    models = {name: load_clip(spec, device=device) for name, spec in cfg.models.items()}
    results = evaluate_models(models, cfg.eval, heads=TextHeadCache(default_cache_dir()), device=device)
    out = Path(cfg.output)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", markdown_table(results))
    if cfg.clip_benchmark_json:
        archs = {name: model.arch for name, model in models.items()}
        write_benchmark_json(results, archs, cfg.eval.dataset, out / "clip_benchmark")
    barrier()  # under torchrun: rank 0's files exist before any rank reads them
    return results
