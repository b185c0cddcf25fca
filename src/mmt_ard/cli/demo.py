"""``mmt-ard demo``: the paper's pipeline on the built-in world, offline, on a CPU.

1. pretrain CLIPs (teacher-size ViT, student-size ViT and ResNet) on image-caption pairs;
2. fine-tune the teacher: clean (CE) -> clean teacher, PMG-AFT -> adversarial teacher;
3. distill ViT and ResNet students with the single-teacher baseline (``adv-only``, no
   cross-modal term) and with MMT-ARD (``confidence``, default gamma), plus a LoRA ViT student with MMT-ARD;
4. evaluate everything at eps 1-4/255 with PGD and then APGD-CE + APGD-T (a reduced AutoAttack:
   fewer iterations and target classes, sized for a CPU) on the samples PGD left, with the
   sanity checks, and zero-shot; write ``results.json``, ``report.md`` and ``curves.png``.

Each stage is a normal run folder under the output; a stage whose folder holds a finished run
with the same config is reused (``--force`` redoes it).
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
from mmt_ard.evaluation import EvalConfig, evaluate_models, markdown_table
from mmt_ard.io import atomic_write_json, atomic_write_text
from mmt_ard.models import ModelSpec, TextHeadCache, default_cache_dir, load_clip
from mmt_ard.models.export import resolve_weights
from mmt_ard.training.finetune import FinetuneConfig, run_finetune, validation_eval
from mmt_ard.training.loop import LoopConfig, resolve_device
from mmt_ard.training.optim import OptimConfig
from mmt_ard.training.pretrain import PretrainConfig, run_pretrain

log = logging.getLogger(__name__)

STUDENTS = {"vit-s": "mmt-vit-s", "rn-s": "mmt-rn-s"}


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
    aa_iterations: int = 10  # APGD iterations (AutoAttack uses 100)
    aa_targets: int = 1  # APGD-T target classes (AutoAttack uses 9)
    sanity_samples: int = 64

    @staticmethod
    def quick(device: str = "auto") -> DemoPlan:
        return DemoPlan(100, 100, 64, 40, 30, 40, 32, 2, 300, 5, device, 6000, 3000,
                        aa_iterations=3, aa_targets=1, sanity_samples=16)

    def eval_config(self) -> EvalConfig:
        """Final evaluation: PGD, then the reduced AutoAttack on what PGD left (per-sample worst case)."""
        return EvalConfig(limit=self.eval_limit, steps=self.eval_steps, attack="pgd+autoattack",
                          apgd_iterations=self.aa_iterations, n_target_classes=self.aa_targets,
                          sanity_samples=self.sanity_samples)


@dataclass
class Stage:
    name: str
    run: Callable[..., dict[str, Any]]
    cfg: Any
    summary: dict[str, Any] = field(default_factory=dict)


def _loop(plan: DemoPlan, **kw: Any) -> LoopConfig:
    return LoopConfig(device=plan.device, **kw)


def plan_stages(out: Path, plan: DemoPlan) -> list[Stage]:
    """Every training stage of the demo with its full config."""
    captions = f"builtin:captions:split=train,n={plan.caption_n}"
    train = f"builtin:shapes:split=train,n={plan.train_n}"
    val = validation_eval(eps=2 / 255)
    val.limit = min(val.limit or 500, plan.eval_limit)

    def pretrain(arch: str, steps: int) -> PretrainConfig:
        lr = 2e-3 if steps >= 200 else 3e-3
        optim = OptimConfig(steps=steps, batch_size=plan.pretrain_batch, lr=lr, weight_decay=0.1, warmup=0.05)
        return PretrainConfig(model=ModelSpec(arch=arch), data=captions, output="", optim=optim, loop=_loop(plan),
                              eval=EvalConfig(dataset="builtin:shapes:split=val", eps=[], limit=plan.eval_limit))

    stages = [Stage("pretrain-teacher", run_pretrain, pretrain("mmt-vit-t", plan.pretrain_teacher_steps))]
    stages += [Stage(f"pretrain-{k}", run_pretrain, pretrain(a, plan.pretrain_student_steps)) for k, a in STUDENTS.items()]
    teacher0 = ModelSpec(arch="mmt-vit-t", pretrained=str(out / "pretrain-teacher" / "model"))
    ft_optim = OptimConfig(steps=plan.clean_steps, batch_size=64, lr=3e-4)
    stages.append(Stage("teacher-clean", run_finetune, FinetuneConfig(
        method="clean", model=teacher0, data=train, optim=ft_optim, loop=_loop(plan), eval=val)))
    stages.append(Stage("teacher-adv", run_finetune, FinetuneConfig(
        method="pmg-aft", model=teacher0, data=train, loop=_loop(plan), eval=val,
        attack=PGDConfig(eps=4 / 255, steps=2, step_size=2 / 255),
        optim=replace(ft_optim, steps=plan.adv_steps))))
    t_clean = ModelSpec(arch="mmt-vit-t", pretrained=str(out / "teacher-clean" / "model"))
    t_adv = ModelSpec(arch="mmt-vit-t", pretrained=str(out / "teacher-adv" / "model"))
    runs = [(k, a, s, False) for k, a in STUDENTS.items() for s in ("adv-only", "confidence")]
    runs.append(("vit-s-lora", "mmt-vit-s", "confidence", True))
    for key, arch, strategy, lora in runs:
        base = "vit-s" if lora else key
        cfg = DistillConfig(
            student=ModelSpec(arch=arch, pretrained=str(out / f"pretrain-{base}" / "model")),
            teacher_clean=t_clean, teacher_adv=t_adv, data=train, output="",
            lora=LoraConfig(enabled=lora), eval=val,
            attack=InnerAttackConfig(eps=2 / 255, steps=plan.inner_steps, step_size=1 / 255),
            # the baseline is plain single-teacher ARD: no cross-modal term (an MMT-ARD contribution)
            loss=LossConfig(strategy=StrategyConfig(name=strategy), **({"gamma": 0.0} if strategy == "adv-only" else {})),
            optim=OptimConfig(steps=plan.distill_steps, batch_size=plan.distill_batch, lr=3e-3 if lora else 5e-4),
            loop=_loop(plan, eval_every=max(plan.distill_steps // 4, 1), checkpoint_every=plan.distill_steps // 2 or 1),
        )
        stages.append(Stage(f"distill-{key}-{strategy}", run_distill, cfg))
    for stage in stages:
        stage.cfg.output = str(out / stage.name)
    return stages


def _finished(stage: Stage) -> dict[str, Any] | None:
    folder = Path(stage.cfg.output)
    summary, config = folder / "summary.json", folder / "config.yaml"
    if not (summary.is_file() and config.is_file()):
        return None
    saved = yaml.safe_load(config.read_text()) or {}
    if saved.get("config") != to_dict(stage.cfg):
        return None
    return json.loads(summary.read_text())


def run_stages(stages: list[Stage], force: bool) -> dict[str, float]:
    """Run (or reuse) each stage in order; returns seconds spent per stage (0 when reused)."""
    seconds: dict[str, float] = {}
    for i, stage in enumerate(stages, 1):
        done = None if force else _finished(stage)
        if done is not None:
            log.info("[%d/%d] %s: reusing the finished run in %s", i, len(stages), stage.name, stage.cfg.output)
            stage.summary, seconds[stage.name] = done, 0.0
            continue
        log.info("[%d/%d] %s", i, len(stages), stage.name)
        t0 = time.perf_counter()
        stage.summary = stage.run(stage.cfg, overwrite=True)
        seconds[stage.name] = round(time.perf_counter() - t0, 1)
    return seconds


def models_to_evaluate(out: Path) -> dict[str, ModelSpec]:
    """Table-1 names: ``group/method``; teachers and undistilled students for reference."""
    models = {
        "teachers/clean": ModelSpec("mmt-vit-t", str(out / "teacher-clean" / "model")),
        "teachers/adversarial": ModelSpec("mmt-vit-t", str(out / "teacher-adv" / "model")),
    }
    for key, arch in STUDENTS.items():
        models[f"{key}/original"] = ModelSpec(arch, str(out / f"pretrain-{key}" / "model"))
        models[f"{key}/baseline"] = ModelSpec(arch, str(out / f"distill-{key}-adv-only" / "student"))
        models[f"{key}/mmt-ard"] = ModelSpec(arch, str(out / f"distill-{key}-confidence" / "student"))
    models["vit-s-lora/mmt-ard"] = ModelSpec("mmt-vit-s", str(out / "distill-vit-s-lora-confidence" / "student"))
    return models


def _fingerprint(specs: dict[str, ModelSpec], eval_cfg: EvalConfig) -> dict[str, Any]:
    """What the results depend on: the eval config and each model's weights file (size, mtime)."""
    files = {}
    for name, spec in specs.items():
        weights = resolve_weights(spec.pretrained or "")
        stat = weights.stat() if weights.is_file() else None
        files[name] = [spec.arch, str(weights), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0]
    return {"eval": to_dict(eval_cfg), "models": files}


def evaluate_all(out: Path, eval_cfg: EvalConfig, device: str, reuse: bool) -> dict[str, Any]:
    """Evaluate every demo model, or reuse ``results.json`` if nothing it depends on changed."""
    specs = models_to_evaluate(out)
    key = _fingerprint(specs, eval_cfg)
    cache = out / "evaluation.json"
    if reuse and cache.is_file() and (out / "results.json").is_file():
        if json.loads(cache.read_text()) == json.loads(json.dumps(key)):
            log.info("evaluate: reusing %s", out / "results.json")
            return json.loads((out / "results.json").read_text())
    log.info("evaluating %d models at eps 1-4/255 (%s) and zero-shot", len(specs), eval_cfg.attack)
    dev = resolve_device(device)
    models = {name: load_clip(spec, dev) for name, spec in specs.items()}
    results = evaluate_models(models, eval_cfg, heads=TextHeadCache(default_cache_dir()), device=dev)
    atomic_write_json(out / "results.json", results)
    atomic_write_json(cache, key)
    return results


def run_demo(output: str | Path, quick: bool = False, force: bool = False, device: str = "auto") -> Path:
    """Run the demo into ``output``; returns the path of ``report.md``."""
    from mmt_ard.cli.report import plot_curves, write_report

    out = Path(output)
    plan = DemoPlan.quick(device) if quick else DemoPlan(device=device)
    t0 = time.perf_counter()
    stages = plan_stages(out, plan)
    seconds = run_stages(stages, force)
    t_eval = time.perf_counter()
    eval_cfg = plan.eval_config()
    results = evaluate_all(out, eval_cfg, plan.device, reuse=not force)
    seconds["evaluate"] = round(time.perf_counter() - t_eval, 1)
    seconds["total"] = round(time.perf_counter() - t0, 1)
    plot_curves(out, [s for s in stages if s.name.startswith("distill-")], out / "curves.png")
    report = write_report(out, results, plan, eval_cfg, seconds, quick)
    atomic_write_text(out / "table.md", markdown_table(results))
    print(f"\nDemo finished in {seconds['total']:.0f} s. Report: {report}\n")
    print(report.read_text())
    return report
