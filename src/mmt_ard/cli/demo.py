"""``mmt-ard demo``: the paper's pipeline on the built-in world, offline, on a CPU.

1. pretrain CLIPs (teacher-size ViT, student-size ViT and ResNet) on image-caption pairs;
2. fine-tune the teacher: clean (CE) -> clean teacher, PMG-AFT -> adversarial teacher;
3. distill ViT and ResNet students with the single-teacher baseline (``adv-only``, no
   cross-modal term) and with MMT-ARD (``confidence``, default gamma), plus a LoRA ViT student with MMT-ARD;
4. evaluate everything at eps 1-4/255 with PGD and then APGD-CE + APGD-T under their own names with
   CPU-sized settings (the *reduced chain*, fewer iterations and target classes: not AutoAttack) on
   the samples PGD left, with the sanity checks, and zero-shot;
5. measure once how far the reduced chain is from the ``autoattack`` protocol: both on the MMT-ARD
   students, on ``gap_limit`` test images at 2 and 4/255 (``protocol-gap.json``); write
   ``results.json``, ``report.md`` and ``curves.png``.

Each stage is a normal run folder under the output; a stage whose folder holds a finished run
with the same config is reused (``--force`` redoes it).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from mmt_ard.config import to_dict
from mmt_ard.evaluation import EvalConfig, evaluate_models, markdown_table
from mmt_ard.experiments.world import DEMO_LORA, STUDENTS, DemoPlan, plan_stages, run_stages
from mmt_ard.io import atomic_write_json, atomic_write_text
from mmt_ard.models import ModelSpec, TextHeadCache, default_cache_dir, load_clip
from mmt_ard.models.export import resolve_weights
from mmt_ard.training.loop import resolve_device

__all__ = ["DemoPlan", "run_demo"]

log = logging.getLogger(__name__)

GAP_MODELS = tuple(f"{key}/mmt-ard" for key in STUDENTS)  # where the reduced chain is compared with autoattack


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
    if DEMO_LORA:
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


def evaluate_all(
    out: Path,
    eval_cfg: EvalConfig,
    device: str,
    reuse: bool,
    specs: dict[str, ModelSpec] | None = None,
    name: str = "results.json",
    key_name: str = "evaluation.json",
) -> dict[str, Any]:
    """Evaluate ``specs`` (every demo model) into ``out/name``, or reuse it if nothing it depends on changed."""
    specs = models_to_evaluate(out) if specs is None else specs
    key = _fingerprint(specs, eval_cfg)
    cache, target = out / key_name, out / name
    if reuse and cache.is_file() and target.is_file() and json.loads(cache.read_text()) == json.loads(json.dumps(key)):
        log.info("evaluate: reusing %s", target)
        return json.loads(target.read_text())
    log.info("evaluating %d models (%s) into %s", len(specs), eval_cfg.attack, target.name)
    dev = resolve_device(device)
    models = {n: load_clip(spec, dev) for n, spec in specs.items()}
    results = evaluate_models(models, eval_cfg, heads=TextHeadCache(default_cache_dir()), device=dev)
    atomic_write_json(target, results)
    atomic_write_json(cache, key)
    return results


def protocol_gap(out: Path, plan: DemoPlan, reuse: bool) -> dict[str, Any]:
    """The reduced chain then the ``autoattack`` protocol on the MMT-ARD students (``plan.gap_config()``)."""
    specs = {k: v for k, v in models_to_evaluate(out).items() if k in GAP_MODELS}
    return evaluate_all(out, plan.gap_config(), plan.device, reuse, specs, "protocol-gap.json", "protocol-gap.key.json")


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
    t_gap = time.perf_counter()
    gap = protocol_gap(out, plan, reuse=not force)
    seconds["reduced chain vs autoattack"] = round(time.perf_counter() - t_gap, 1)
    seconds["total"] = round(time.perf_counter() - t0, 1)
    plot_curves(out, [s for s in stages if s.name.startswith("distill-")], out / "curves.png")
    from mmt_ard.reporting import write_report as write_html_report

    html = write_html_report([out], out / "report", title="MMT-ARD demo" + (" (quick)" if quick else ""))
    report = write_report(out, results, plan, eval_cfg, seconds, quick, html=html, gap=gap)
    atomic_write_text(out / "table.md", markdown_table(results))
    print(f"\nDemo finished in {seconds['total']:.0f} s. Report: {report} (one page with figures: {html})\n")
    print(report.read_text())
    return report
