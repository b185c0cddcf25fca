"""Distillation runs and their evaluations, shared by every experiment of one output folder.

A run is keyed by its whole requested config (seed included, output excluded): two experiments that
need the same run (Table 1's MMT-ARD is also Table 2's "weighted") train it once. Both kinds of work
are :class:`~mmt_ard.finished.FinishedWork`: a run's result is its ``summary.json`` and its key is
``experiment-key.json``, written once training has finished; an evaluation is cached beside the model
it measured, its file named by the digest of the evaluation config and the model's
:func:`~mmt_ard.models.export.spec_stamp` (architecture, path, size and mtime of its weights).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mmt_ard.config import load_config, to_dict
from mmt_ard.devices import resolve_device
from mmt_ard.distill.run import DistillConfig, run_distill
from mmt_ard.errors import UserError
from mmt_ard.evaluation import EvalConfig, ModelResult, evaluate_model
from mmt_ard.finished import FinishedWork, digest
from mmt_ard.models import ModelSpec, TextHeadCache, default_cache_dir, load_clip
from mmt_ard.models.export import resolve_weights, spec_stamp
from mmt_ard.training.run import read_metrics

log = logging.getLogger(__name__)


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
        return read_metrics(self.path)


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
        """Train ``cfg`` (or reuse its finished folder) under ``root/runs``; ``label`` is for the log.

        ``cfg`` is not changed: the run gets a copy with its output folder set."""
        key = to_dict(cfg)
        key.pop("output")
        name = f"{cfg.student.arch}{'-lora' if cfg.lora.enabled else ''}-{cfg.loss.strategy.name}"
        folder = self.root / "runs" / f"{_slug(name)}-s{cfg.loop.seed}-{digest(key, RUN_DIGEST)}"  # one per config
        cfg = replace(cfg, output=str(folder))
        # the request is the key, never config.yaml: that records the config as it ran (bf16 -> fp32 without native bf16)
        work = FinishedWork(folder / "summary.json", key, folder / "experiment-key.json")
        _adopt_earlier_version(work, cfg)
        if work.done():
            return self._finished(folder, cfg, 0.0)
        # an interrupted run (Ctrl-C, SIGTERM, --max-time) left its checkpoint: continue it. The folder name
        # is the config's digest, and run_distill refuses a checkpoint whose config differs.
        resume = (folder / "checkpoints" / "last.pt").is_file()
        log.info("%s %s (seed %d) -> %s", "resume" if resume else "distill", label, cfg.loop.seed, folder)
        t0 = time.perf_counter()
        result = run_distill(cfg, resume=resume, overwrite=not resume)
        if "stopped_at" in result:
            raise UserError(
                f"the run in {folder} stopped at step {result['stopped_at']} ({result.get('reason')}); "
                "rerun the same command: it continues this run from its checkpoint and reuses "
                "every finished one"
            )
        work.mark_done()  # summary.json is written: the key makes the folder a finished run of this config
        self.trained.append(str(folder))
        return self._finished(folder, cfg, round(time.perf_counter() - t0, 1))

    @staticmethod
    def _finished(folder: Path, cfg: DistillConfig, seconds: float) -> Run:
        return Run(folder, cfg, json.loads((folder / "summary.json").read_text()), seconds)

    def evaluate(self, name: str, spec: ModelSpec, cfg: EvalConfig) -> ModelResult:
        """``evaluate_model`` of ``spec``, cached beside its weights (keyed by config and weights file)."""
        weights = resolve_weights(spec.pretrained or "")
        folder = weights.parent if weights.is_file() else self.root / "evaluations"
        key = {"eval": to_dict(cfg), "model": spec_stamp(spec.arch, spec.pretrained, spec.vision)}
        work = FinishedWork.named(folder, "evaluation", key)
        found = work.load()
        if found is not None:
            return ModelResult.from_dict(found, str(work.result), name)
        device = resolve_device(self.device)
        log.info("evaluate %s (%s)", name, spec.pretrained)
        result = evaluate_model(
            load_clip(spec, device), cfg, heads=TextHeadCache(default_cache_dir()), name=name, device=device
        )
        work.save(result.to_dict())
        return result


RUN_DIGEST = 10  # characters of the config digest in a run folder's name (folders of earlier versions keep theirs)


def _adopt_earlier_version(work: FinishedWork, cfg: DistillConfig) -> None:
    """A finished run folder of a version before ``experiment-key.json`` gets its key file when its
    config.yaml records exactly this request (nothing was resolved differently: e.g. fp32), so it is
    reused like any other. One whose config.yaml differs (bf16 that ran as fp32) is not trusted: its
    checkpoint continues it at its last step (validation and export again, no training)."""
    assert work.key_file is not None
    if not work.result.is_file() or work.key_file.exists():
        return
    saved = work.result.with_name("config.yaml")
    if saved.is_file() and (yaml.safe_load(saved.read_text()) or {}).get("config") == to_dict(cfg):
        log.info("recording the key of %s (a run of an earlier version)", work.result.parent)
        work.mark_done()
