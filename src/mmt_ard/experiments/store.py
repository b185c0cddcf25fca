"""Distillation runs and their evaluations, shared by every experiment of one output folder.

A run is keyed by its whole config (seed included, output excluded): two experiments that need the
same run (Table 1's MMT-ARD is also Table 2's "weighted") train it once. A finished run folder
with the same config is reused; an evaluation is cached beside the model it measured, keyed by the
evaluation config and the weights file's size and mtime.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmt_ard.config import load_config, to_dict
from mmt_ard.distill.run import DistillConfig, run_distill
from mmt_ard.errors import UserError
from mmt_ard.evaluation import EvalConfig, evaluate_model
from mmt_ard.io import atomic_write_json
from mmt_ard.models import ModelSpec, TextHeadCache, default_cache_dir, load_clip
from mmt_ard.models.export import resolve_weights
from mmt_ard.training.loop import resolve_device

log = logging.getLogger(__name__)


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:40]


@dataclass
class Run:
    """A finished distillation: its folder, config, summary and logged metrics."""

    path: Path
    cfg: DistillConfig
    summary: dict[str, Any]
    seconds: float  # 0 when reused

    @property
    def student(self) -> ModelSpec:
        return ModelSpec(self.cfg.student.arch, str(self.path / "student"))

    def metrics(self) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


@dataclass
class RunStore:
    root: Path
    device: str = "auto"
    trained: list[str] = field(default_factory=list)  # folders trained (not reused) by this store

    def config(self, recipe: DistillConfig, overrides: dict[str, Any], seed: int) -> DistillConfig:
        """``recipe`` with dotted-key ``overrides`` (``{"loss.gamma": 0.0}``) and ``loop.seed``."""
        values = {**overrides, "loop.seed": seed, "output": ""}
        return load_config(DistillConfig, base=recipe, values=values)

    def distill(self, label: str, cfg: DistillConfig) -> Run:
        """Train ``cfg`` (or reuse its finished folder) under ``root/runs``; ``label`` is for the log."""
        key = to_dict(cfg)
        key.pop("output")
        name = f"{cfg.student.arch}{'-lora' if cfg.lora.enabled else ''}-{cfg.loss.strategy.name}"
        folder = self.root / "runs" / f"{_slug(name)}-s{cfg.loop.seed}-{digest(key)}"  # same config, same folder
        cfg.output = str(folder)
        summary_file, key_file = folder / "summary.json", folder / "experiment-key.json"
        # the store's own record of the requested config: config.yaml holds the resolved one (run_distill
        # turns loop.precision bf16 into fp32 on devices without native bf16), which never equals the request
        if summary_file.is_file() and (
            key_file.is_file() and json.loads(key_file.read_text()) == key or self._saved_config(folder) == to_dict(cfg)
        ):
            return self._finished(folder, cfg, 0.0)
        # an interrupted run (Ctrl-C, SIGTERM, --max-time) left its checkpoint: continue it. The folder name
        # is the config's digest, and run_distill refuses a checkpoint whose config differs.
        resume = (folder / "checkpoints" / "last.pt").is_file()
        log.info("%s %s (seed %d) -> %s", "resume" if resume else "distill", label, cfg.loop.seed, folder)
        t0 = time.perf_counter()
        result = run_distill(copy.deepcopy(cfg), resume=resume, overwrite=not resume)
        if "stopped_at" in result:
            raise UserError(
                f"the run in {folder} stopped at step {result['stopped_at']} ({result.get('reason')}); "
                "rerun the same command: it continues this run from its checkpoint and reuses "
                "every finished one"
            )
        atomic_write_json(key_file, key)
        self.trained.append(str(folder))
        return self._finished(folder, cfg, round(time.perf_counter() - t0, 1))

    @staticmethod
    def _saved_config(folder: Path) -> Any:
        path = folder / "config.yaml"
        return (yaml.safe_load(path.read_text()) or {}).get("config") if path.is_file() else None

    @staticmethod
    def _finished(folder: Path, cfg: DistillConfig, seconds: float) -> Run:
        return Run(folder, cfg, json.loads((folder / "summary.json").read_text()), seconds)

    def evaluate(self, name: str, spec: ModelSpec, cfg: EvalConfig) -> dict[str, Any]:
        """``evaluate_model`` of ``spec``, cached beside its weights (keyed by config and weights file)."""
        weights = resolve_weights(spec.pretrained or "")
        stat = weights.stat() if weights.is_file() else None
        key = digest(
            {
                "eval": to_dict(cfg),
                "arch": spec.arch,
                "weights": str(weights),
                "vision": spec.vision,
                "size": stat.st_size if stat else 0,
                "mtime": stat.st_mtime_ns if stat else 0,
            }
        )
        folder = weights.parent if weights.is_file() else self.root / "evaluations"
        cache = folder / f"evaluation-{key}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        device = resolve_device(self.device)
        log.info("evaluate %s (%s)", name, spec.pretrained)
        result = evaluate_model(
            load_clip(spec, device), cfg, heads=TextHeadCache(default_cache_dir()), name=name, device=device
        )
        atomic_write_json(cache, result)
        return result
