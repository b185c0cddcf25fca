"""The built-in world's training stages: pretrained CLIPs, the two teachers, the distillations.

Shared by ``mmt-ard demo`` and the ``builtin`` experiment preset. Every stage is a normal run
folder; a folder that holds a finished run with the same config is reused.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from mmt_ard.attacks import PGDConfig
from mmt_ard.config import to_dict
from mmt_ard.demo.plan import TEACHER_ARCH, DemoPlan
from mmt_ard.demo.progress import StageProgress
from mmt_ard.distill.lora import LoraConfig
from mmt_ard.distill.run import DistillConfig, run_distill
from mmt_ard.distill.strategies import StrategyConfig
from mmt_ard.distill.task import InnerAttackConfig, LossConfig
from mmt_ard.errors import UserError
from mmt_ard.evaluation import EvalConfig, validation_eval
from mmt_ard.evaluation.config import upgrade_saved_config
from mmt_ard.models import ModelSpec
from mmt_ard.training.finetune import FinetuneConfig, run_finetune
from mmt_ard.training.loop import LoopConfig
from mmt_ard.training.optim import OptimConfig
from mmt_ard.training.pretrain import PretrainConfig, run_pretrain

__all__ = ["Stage", "baseline", "finished", "plan_stages", "run_stages", "student_recipe", "world_stages"]

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """One training run of the demo: its folder name, the command's function and its full config."""

    name: str
    run: Callable[..., dict[str, Any]]
    cfg: Any
    summary: dict[str, Any] = field(default_factory=dict)


def _loop(plan: DemoPlan, **kw: Any) -> LoopConfig:
    return LoopConfig(device=plan.device, **kw)


def _val(plan: DemoPlan) -> EvalConfig:
    val = validation_eval(eps=2 / 255)
    val.limit = min(val.limit or 500, plan.eval_limit)
    return val


def world_stages(out: Path, plan: DemoPlan) -> list[Stage]:
    """Pretrain the teacher-size ViT and the students, then fine-tune the two teachers."""
    captions = f"builtin:captions:split=train,n={plan.caption_n}"
    train = f"builtin:shapes:split=train,n={plan.train_n}"

    def pretrain(arch: str, steps: int) -> PretrainConfig:
        optim = OptimConfig(
            steps=steps, batch_size=plan.pretrain_batch, lr=plan.pretrain_lr, weight_decay=0.1, warmup=0.05
        )
        return PretrainConfig(
            model=ModelSpec(arch=arch),
            data=captions,
            output="",
            optim=optim,
            loop=_loop(plan),
            eval=EvalConfig(dataset="builtin:shapes:split=val", eps=[], limit=plan.eval_limit),
        )

    stages = [Stage("pretrain-teacher", run_pretrain, pretrain(TEACHER_ARCH, plan.pretrain_teacher_steps))]
    stages += [
        Stage(f"pretrain-{k}", run_pretrain, pretrain(a, plan.pretrain_student_steps))
        for k, a in plan.pretrained().items()
    ]
    teacher0 = ModelSpec(arch=TEACHER_ARCH, pretrained=str(out / "pretrain-teacher" / "model"))
    ft_optim = OptimConfig(steps=plan.clean_steps, batch_size=64, lr=3e-4)
    clean = FinetuneConfig(
        method="clean", model=teacher0, data=train, optim=ft_optim, loop=_loop(plan), eval=_val(plan)
    )
    adv = FinetuneConfig(
        method="pmg-aft",
        model=teacher0,
        data=train,
        loop=_loop(plan),
        eval=_val(plan),
        attack=PGDConfig(eps=4 / 255, steps=2, step_size=2 / 255),
        optim=replace(ft_optim, steps=plan.adv_steps),
    )
    stages += [Stage("teacher-clean", run_finetune, clean), Stage("teacher-adv", run_finetune, adv)]
    for stage in stages:
        stage.cfg.output = str(out / stage.name)
    return stages


def student_recipe(world: Path, plan: DemoPlan, key: str) -> DistillConfig:
    """The MMT-ARD distillation of student ``key`` (``plan.students[key]``); ``output`` is left empty."""
    recipe = plan.students[key]
    return DistillConfig(
        student=ModelSpec(arch=recipe.arch, pretrained=str(world / f"pretrain-{recipe.start}" / "model")),
        teacher_clean=ModelSpec(arch=TEACHER_ARCH, pretrained=str(world / "teacher-clean" / "model")),
        teacher_adv=ModelSpec(arch=TEACHER_ARCH, pretrained=str(world / "teacher-adv" / "model")),
        data=f"builtin:shapes:split=train,n={plan.train_n}",
        output="",
        lora=LoraConfig(enabled=bool(recipe.lora), target_modules=list(recipe.lora)),
        eval=_val(plan),
        attack=InnerAttackConfig(eps=recipe.eps, steps=plan.inner_steps, step_size=recipe.step_size),
        loss=LossConfig(strategy=StrategyConfig(name="confidence")),
        optim=OptimConfig(steps=plan.distill_steps, batch_size=plan.distill_batch, lr=recipe.lr),
        loop=_loop(plan, eval_every=max(plan.distill_steps // 4, 1), checkpoint_every=plan.distill_steps // 2 or 1),
    )


def baseline(cfg: DistillConfig) -> DistillConfig:
    """Single-teacher ARD: the adversarial teacher only, no cross-modal term (an MMT-ARD contribution)."""
    return replace(cfg, loss=replace(cfg.loss, gamma=0.0, strategy=StrategyConfig(name="adv-only")))


def plan_stages(out: Path, plan: DemoPlan) -> list[Stage]:
    """Every training stage of the demo with its full config: the world, then each student's baseline
    (where its recipe asks for one) and MMT-ARD distillation."""
    stages = world_stages(out, plan)
    for key, recipe in plan.students.items():
        mmt = student_recipe(out, plan, key)
        if recipe.baseline:
            stages.append(Stage(f"distill-{key}-adv-only", run_distill, baseline(mmt)))
        stages.append(Stage(f"distill-{key}-confidence", run_distill, mmt))
    for stage in stages:
        stage.cfg.output = str(out / stage.name)
    return stages


def finished(stage: Stage) -> dict[str, Any] | None:
    """The summary of the finished run in the stage's folder when it was built with the stage's config
    (a config saved by an earlier version is upgraded first), else None."""
    folder = Path(stage.cfg.output)
    summary, config = folder / "summary.json", folder / "config.yaml"
    if not (summary.is_file() and config.is_file()):
        return None
    saved = yaml.safe_load(config.read_text()) or {}
    if upgrade_saved_config(saved.get("config") or {}) != to_dict(stage.cfg):
        return None
    return json.loads(summary.read_text())  # type: ignore[no-any-return]


def run_stages(
    stages: list[Stage], force: bool, keep_foreign: bool = False, progress: StageProgress | None = None
) -> dict[str, float]:
    """Run (or reuse) each stage in order; returns seconds spent per stage (0 when reused).

    ``keep_foreign``: a finished stage built with another config is an error instead of being
    retrained over (a world the user pointed to is theirs). ``progress`` counts the stages (by
    default one log line per stage, no bar)."""
    own = progress is None
    progress = progress or StageProgress(len(stages), bar=False, desc="world")
    seconds: dict[str, float] = {}
    try:
        for stage in stages:
            done = None if force else finished(stage)
            if done is None and keep_foreign and (Path(stage.cfg.output) / "summary.json").is_file():
                raise UserError(
                    f"{stage.cfg.output} holds a finished {stage.name} run with another config (other "
                    "sizes, --quick on one side only, or another --device); it is left alone: pass a "
                    "--world built with the same settings, or a new folder"
                )
            if done is not None:
                stage.summary, seconds[stage.name] = done, 0.0
                progress.finish(stage.name, 0.0, reused=f"the finished run in {stage.cfg.output}")
                continue
            progress.start(stage.name)
            t0 = time.perf_counter()
            stage.summary = stage.run(stage.cfg, overwrite=True)
            seconds[stage.name] = round(time.perf_counter() - t0, 1)
            progress.finish(stage.name, seconds[stage.name])
    finally:
        if own:
            progress.close()
    return seconds
