"""``mmt-ard distill``: build the three models, train the task, export the student."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mmt_ard.config import expand_env
from mmt_ard.data import LabeledImages, build_dataset
from mmt_ard.data.fingerprint import data_fingerprint
from mmt_ard.data.pipeline import StepBatches, use_model_preprocess
from mmt_ard.distill.fast import FastPathConfig
from mmt_ard.distill.logit_cache import CleanLogitCache
from mmt_ard.distill.lora import LoraConfig, apply_lora, is_lora, merged_copy, save_adapters
from mmt_ard.distill.task import DistillationTask, InnerAttackConfig, LossConfig
from mmt_ard.evaluation import EvalConfig, check_datasets, validation_eval
from mmt_ard.models import ModelSpec, TextHeadCache, ZeroShotClassifier, default_cache_dir, load_clip
from mmt_ard.models.export import export_open_clip
from mmt_ard.precision import effective_precision
from mmt_ard.training.loop import LoopConfig, resolve_loop, train_and_export, validation_metrics
from mmt_ard.training.optim import OptimConfig, cosine_lr_factor
from mmt_ard.training.run import RunDir

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    """Everything ``mmt-ard distill`` reads; each component gets only its own section."""

    student: ModelSpec = field(default_factory=lambda: ModelSpec(arch="mmt-vit-s"))
    teacher_clean: ModelSpec = field(default_factory=lambda: ModelSpec(arch="mmt-vit-t"))
    teacher_adv: ModelSpec = field(default_factory=lambda: ModelSpec(arch="mmt-vit-t"))
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: str = "builtin:shapes:split=train"
    output: str = "runs/distill"
    attack: InnerAttackConfig = field(default_factory=InnerAttackConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=300, batch_size=64, lr=5e-4))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(eval_every=100, checkpoint_every=100))
    eval: EvalConfig = field(default_factory=validation_eval)
    fast: FastPathConfig = field(default_factory=FastPathConfig)


def build_task(
    cfg: DistillConfig, ds: LabeledImages, device: torch.device, heads: TextHeadCache, teacher_precision: str = ""
) -> DistillationTask:
    """Load student and teachers, give each its own zero-shot head for ``ds``, and assemble the task.

    ``teacher_precision`` is the resolved precision of the teachers ("" = ``cfg.loop.precision``).
    """
    teacher_precision = teacher_precision or cfg.loop.precision

    def classifier(spec: ModelSpec) -> ZeroShotClassifier:
        clip = load_clip(spec, device=device)
        return ZeroShotClassifier(clip, heads.head(clip, ds.classnames, ds.templates)).to(device)

    student = classifier(cfg.student)
    student.clip.model.requires_grad_(False)
    if cfg.lora.enabled:
        apply_lora(student.clip, cfg.lora)
    else:
        student.clip.visual.requires_grad_(True)
    warmup = round(cfg.optim.warmup * cfg.optim.steps)
    use_model_preprocess(ds, student.clip)  # the student's resize and crop (teachers resize if needed)
    teacher_clean = classifier(cfg.teacher_clean)
    cache = None
    if cfg.fast.cache_clean_logits:
        # $VARS expand: e.g. a node-local directory per node (rows are exchanged, storage need not be shared)
        root = Path(expand_env(cfg.fast.cache_dir)) if cfg.fast.cache_dir else default_cache_dir() / "teacher-logits"
        cache = CleanLogitCache.open(root, teacher_clean, data_fingerprint(ds), len(ds), teacher_precision)
    return DistillationTask(
        student,
        teacher_clean,
        classifier(cfg.teacher_adv),
        cfg.attack,
        cfg.loss,
        seed=cfg.loop.seed,
        precision=cfg.loop.precision,
        teacher_precision=teacher_precision,
        lr_scale=lambda step: cosine_lr_factor(step, cfg.optim.steps, warmup, cfg.optim.min_lr_ratio),
        fast=cfg.fast,
        clean_cache=cache,
    ).to(device)


def resolve_run(cfg: DistillConfig) -> tuple[DistillConfig, torch.device, str]:
    """``(the config as it runs, device, teachers' precision)``: ``loop.precision`` and a
    ``fast.teacher_precision`` asked for apart from it, as they run on this device (bf16 falls back to
    fp32 where it is not native). The run folder records this config; ``cfg`` itself is not changed."""
    resolved = resolve_loop(cfg.loop)
    teacher_precision = effective_precision(
        cfg.fast.teacher_precision or resolved.precision, resolved.device, cfg.loop.force_bf16
    )
    fast = replace(cfg.fast, teacher_precision=teacher_precision) if cfg.fast.teacher_precision else cfg.fast
    return replace(cfg, loop=resolved.loop, fast=fast), resolved.device, teacher_precision


def run_distill(cfg: DistillConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Distill; export ``OUTPUT/student`` (open_clip format, LoRA merged) and ``OUTPUT/adapters``."""
    cfg.attack.validate()
    cfg.loss.validate()
    cfg.optim.validate()
    cfg.eval.validate()
    cfg.fast.validate()
    check_datasets(cfg.eval)
    cfg, device, teacher_precision = resolve_run(cfg)
    torch.manual_seed(cfg.loop.seed)
    heads = TextHeadCache(default_cache_dir())
    ds = build_dataset(cfg.data)
    task = build_task(cfg, ds, device, heads, teacher_precision)
    run = RunDir(cfg.output, cfg, resume=resume, overwrite=overwrite)
    clip = task.student.clip

    def validate(step: int) -> dict[str, Any]:
        return validation_metrics(clip, cfg.eval, heads, device)

    def export() -> None:
        export_open_clip(merged_copy(clip), run.path / "student")
        if is_lora(clip):
            save_adapters(clip, run.path / "adapters")

    batches = StepBatches(
        ds, cfg.optim.batch_size, cfg.loop.seed, device, cfg.loop.data, with_index=task.clean_cache is not None
    )
    try:
        return train_and_export(
            task,
            batches,
            cfg.optim,
            cfg.loop,
            run,
            resume,
            validate,
            export,
            summary={
                "student": str(run.path / "student"),
                "arch": cfg.student.arch,
                "strategy": cfg.loss.strategy.name,
                "lora": cfg.lora.enabled,
            },
            desc=f"distill {cfg.loss.strategy.name}",
        )
    finally:
        if task.clean_cache is not None:
            task.clean_cache.flush()
