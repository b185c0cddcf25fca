"""The built-in world: pretrained CLIPs, the two teachers, and the demo's distillations.

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
from mmt_ard.distill.lora import LoraConfig
from mmt_ard.distill.run import DistillConfig, run_distill
from mmt_ard.distill.strategies import StrategyConfig
from mmt_ard.distill.task import InnerAttackConfig, LossConfig
from mmt_ard.errors import UserError
from mmt_ard.evaluation import EvalConfig, validation_eval
from mmt_ard.evaluation.config import upgrade_saved_config
from mmt_ard.evaluation.protocols import APGDSettings, PGDSettings, TargetedSettings
from mmt_ard.models import ModelSpec
from mmt_ard.training.finetune import FinetuneConfig, run_finetune
from mmt_ard.training.loop import LoopConfig
from mmt_ard.training.optim import OptimConfig
from mmt_ard.training.pretrain import PretrainConfig, run_pretrain

log = logging.getLogger(__name__)

STUDENTS = {"vit-s": "mmt-vit-s", "rn-s": "mmt-rn-s"}
# LoRA student of the built-in world (see DEMO_LORA)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj")
LORA_LR = 1e-2
DEMO_LORA = True
# the demo's evaluation chain: PGD, then APGD-CE and APGD-T under their own names with CPU-sized settings
REDUCED_CHAIN = "pgd+apgd-ce+apgd-t"


@dataclass
class DemoPlan:
    """Sizes of the demo; ``quick()`` is the CI smoke version."""

    pretrain_teacher_steps: int = 400
    pretrain_student_steps: int = 400
    pretrain_batch: int = 128
    clean_steps: int = 300
    adv_steps: int = 150
    distill_steps: int = 200
    distill_batch: int = 64
    inner_steps: int = 3
    eval_limit: int = 1000
    eval_steps: int = 10
    device: str = "auto"
    caption_n: int = 20000
    train_n: int = 12000
    apgd_iterations: int = 10  # the reduced chain's APGD iterations (the autoattack protocol: 100)
    apgd_targets: int = 1  # the reduced chain's APGD-T target classes (the autoattack protocol: 9)
    sanity_samples: int = 64
    gap_limit: int = 200  # test images on which the reduced chain is compared with the autoattack protocol

    @staticmethod
    def quick(device: str = "auto") -> DemoPlan:
        return DemoPlan(
            100,
            100,
            64,
            40,
            30,
            40,
            32,
            2,
            300,
            5,
            device,
            6000,
            3000,
            apgd_iterations=3,
            apgd_targets=1,
            sanity_samples=16,
            gap_limit=8,
        )

    def eval_config(self) -> EvalConfig:
        """Final evaluation: PGD, then the reduced chain (APGD-CE then APGD-T with fewer iterations and
        targets, 1 restart; *not* AutoAttack) on what PGD left: the per-sample worst case."""
        return EvalConfig(
            limit=self.eval_limit,
            attack=REDUCED_CHAIN,
            pgd=PGDSettings(steps=self.eval_steps),
            apgd_ce=APGDSettings(self.apgd_iterations, restarts=1),
            apgd_t=TargetedSettings(self.apgd_iterations, restarts=1, targets=self.apgd_targets),
            sanity_samples=self.sanity_samples,
        )

    def gap_config(self) -> EvalConfig:
        """The reduced chain and then the ``autoattack`` protocol on ``gap_limit`` test images at 2 and 4/255:
        ``racc_by_attack["apgd-t"]`` is the reduced chain's number, ``racc`` adds AutoAttack's."""
        return replace(
            self.eval_config(),
            attack=REDUCED_CHAIN + "+autoattack",
            limit=self.gap_limit,
            eps=[2 / 255, 4 / 255],
            zero_shot=[],
            zero_shot_eps=[],
            sanity=False,
        )


@dataclass
class Stage:
    name: str
    run: Callable[..., dict[str, Any]]
    cfg: Any
    summary: dict[str, Any] = field(default_factory=dict)


def _loop(plan: DemoPlan, **kw: Any) -> LoopConfig:
    return LoopConfig(device=plan.device, **kw)


def world_stages(out: Path, plan: DemoPlan) -> list[Stage]:
    """Pretrain the teacher-size ViT and the students, then fine-tune the two teachers."""
    captions = f"builtin:captions:split=train,n={plan.caption_n}"
    train = f"builtin:shapes:split=train,n={plan.train_n}"

    def pretrain(arch: str, steps: int) -> PretrainConfig:
        lr = 2e-3 if steps >= 200 else 3e-3
        optim = OptimConfig(steps=steps, batch_size=plan.pretrain_batch, lr=lr, weight_decay=0.1, warmup=0.05)
        return PretrainConfig(
            model=ModelSpec(arch=arch),
            data=captions,
            output="",
            optim=optim,
            loop=_loop(plan),
            eval=EvalConfig(dataset="builtin:shapes:split=val", eps=[], limit=plan.eval_limit),
        )

    stages = [Stage("pretrain-teacher", run_pretrain, pretrain("mmt-vit-t", plan.pretrain_teacher_steps))]
    stages += [
        Stage(f"pretrain-{k}", run_pretrain, pretrain(a, plan.pretrain_student_steps)) for k, a in STUDENTS.items()
    ]
    teacher0 = ModelSpec(arch="mmt-vit-t", pretrained=str(out / "pretrain-teacher" / "model"))
    ft_optim = OptimConfig(steps=plan.clean_steps, batch_size=64, lr=3e-4)
    stages.append(
        Stage(
            "teacher-clean",
            run_finetune,
            FinetuneConfig(
                method="clean", model=teacher0, data=train, optim=ft_optim, loop=_loop(plan), eval=_val(plan)
            ),
        )
    )
    stages.append(
        Stage(
            "teacher-adv",
            run_finetune,
            FinetuneConfig(
                method="pmg-aft",
                model=teacher0,
                data=train,
                loop=_loop(plan),
                eval=_val(plan),
                attack=PGDConfig(eps=4 / 255, steps=2, step_size=2 / 255),
                optim=replace(ft_optim, steps=plan.adv_steps),
            ),
        )
    )
    for stage in stages:
        stage.cfg.output = str(out / stage.name)
    return stages


def _val(plan: DemoPlan) -> EvalConfig:
    val = validation_eval(eps=2 / 255)
    val.limit = min(val.limit or 500, plan.eval_limit)
    return val


def student_recipe(world: Path, plan: DemoPlan, key: str, lora: bool = False) -> DistillConfig:
    """The built-in distillation recipe for student ``key`` (MMT-ARD: ``confidence``, gamma 1).

    lr 2e-3 for full fine-tuning: the ViT student's gradient norm is 5-20 against the clip of 1,
    so at 5e-4 every step is clipped and it barely leaves its start in 200 steps. The LoRA student
    gets adapters on the MLPs too, lr 1e-2 and a training eps of 4/255: with attention-only adapters
    or at eps 2/255 it ended no more robust than the undistilled student
    (docs/vit-student-investigation.md). ``output`` is left empty for the caller.
    """
    return DistillConfig(
        student=ModelSpec(arch=STUDENTS[key], pretrained=str(world / f"pretrain-{key}" / "model")),
        teacher_clean=ModelSpec(arch="mmt-vit-t", pretrained=str(world / "teacher-clean" / "model")),
        teacher_adv=ModelSpec(arch="mmt-vit-t", pretrained=str(world / "teacher-adv" / "model")),
        data=f"builtin:shapes:split=train,n={plan.train_n}",
        output="",
        lora=LoraConfig(enabled=lora, target_modules=list(LORA_TARGETS) if lora else []),
        eval=_val(plan),
        # the LoRA student trains against eps 4/255 (validation: +4.4 racc at 2/255 over 2/255 training)
        attack=InnerAttackConfig(eps=4 / 255, steps=plan.inner_steps, step_size=2 / 255)
        if lora
        else InnerAttackConfig(eps=2 / 255, steps=plan.inner_steps, step_size=1 / 255),
        loss=LossConfig(strategy=StrategyConfig(name="confidence")),
        optim=OptimConfig(steps=plan.distill_steps, batch_size=plan.distill_batch, lr=LORA_LR if lora else 2e-3),
        loop=_loop(plan, eval_every=max(plan.distill_steps // 4, 1), checkpoint_every=plan.distill_steps // 2 or 1),
    )


def baseline(cfg: DistillConfig) -> DistillConfig:
    """Single-teacher ARD: the adversarial teacher only, no cross-modal term (an MMT-ARD contribution)."""
    return replace(cfg, loss=replace(cfg.loss, gamma=0.0, strategy=StrategyConfig(name="adv-only")))


def plan_stages(out: Path, plan: DemoPlan) -> list[Stage]:
    """Every training stage of the demo with its full config."""
    stages = world_stages(out, plan)
    for key in STUDENTS:
        mmt = student_recipe(out, plan, key)
        stages.append(Stage(f"distill-{key}-adv-only", run_distill, baseline(mmt)))
        stages.append(Stage(f"distill-{key}-confidence", run_distill, mmt))
    if DEMO_LORA:
        stages.append(
            Stage("distill-vit-s-lora-confidence", run_distill, student_recipe(out, plan, "vit-s", lora=True))
        )
    for stage in stages:
        stage.cfg.output = str(out / stage.name)
    return stages


def _finished(stage: Stage) -> dict[str, Any] | None:
    folder = Path(stage.cfg.output)
    summary, config = folder / "summary.json", folder / "config.yaml"
    if not (summary.is_file() and config.is_file()):
        return None
    saved = yaml.safe_load(config.read_text()) or {}
    if upgrade_saved_config(saved.get("config") or {}) != to_dict(stage.cfg):  # a stage of an earlier version too
        return None
    return json.loads(summary.read_text())


def run_stages(stages: list[Stage], force: bool, keep_foreign: bool = False) -> dict[str, float]:
    """Run (or reuse) each stage in order; returns seconds spent per stage (0 when reused).

    ``keep_foreign``: a finished stage built with another config is an error instead of being
    retrained over (a world the user pointed to is theirs)."""
    seconds: dict[str, float] = {}
    for i, stage in enumerate(stages, 1):
        done = None if force else _finished(stage)
        if done is None and keep_foreign and (Path(stage.cfg.output) / "summary.json").is_file():
            raise UserError(
                f"{stage.cfg.output} holds a finished {stage.name} run with another config (other "
                "sizes, --quick on one side only, or another --device); it is left alone: pass a "
                "--world built with the same settings, or a new folder"
            )
        if done is not None:
            log.info("[%d/%d] %s: reusing the finished run in %s", i, len(stages), stage.name, stage.cfg.output)
            stage.summary, seconds[stage.name] = done, 0.0
            continue
        log.info("[%d/%d] %s", i, len(stages), stage.name)
        t0 = time.perf_counter()
        stage.summary = stage.run(stage.cfg, overwrite=True)
        seconds[stage.name] = round(time.perf_counter() - t0, 1)
    return seconds
