"""The demo's evaluations: every model under the reduced chain, and the MMT-ARD students under the
``autoattack`` protocol too (how far the reduced chain is from it).

Each is finished work (:class:`~mmt_ard.finished.FinishedWork`): ``results.json`` with its key in
``evaluation.json``, ``protocol-gap.json`` with ``protocol-gap.key.json``; reused while the eval config
and every model's weights (:func:`~mmt_ard.models.export.spec_stamp`) are unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mmt_ard.config import to_dict
from mmt_ard.demo.plan import TEACHER_ARCH, DemoPlan
from mmt_ard.devices import resolve_device
from mmt_ard.evaluation import EvalConfig, ModelResult, evaluate_models, results_from_dict
from mmt_ard.finished import FinishedWork
from mmt_ard.models import ModelSpec, TextHeadCache, default_cache_dir, load_clip
from mmt_ard.models.export import spec_stamp

__all__ = ["evaluate_all", "models_to_evaluate", "protocol_gap"]

log = logging.getLogger(__name__)

Results = dict[str, ModelResult]


def models_to_evaluate(out: Path, plan: DemoPlan) -> dict[str, ModelSpec]:
    """Table-1 names: ``group/method``; teachers, and each student's undistilled original, for reference."""
    models = {
        "teachers/clean": ModelSpec(TEACHER_ARCH, str(out / "teacher-clean" / "model")),
        "teachers/adversarial": ModelSpec(TEACHER_ARCH, str(out / "teacher-adv" / "model")),
    }
    for key, recipe in plan.students.items():
        if recipe.baseline:
            models[f"{key}/original"] = ModelSpec(recipe.arch, str(out / f"pretrain-{recipe.start}" / "model"))
            models[f"{key}/baseline"] = ModelSpec(recipe.arch, str(out / f"distill-{key}-adv-only" / "student"))
        models[f"{key}/mmt-ard"] = ModelSpec(recipe.arch, str(out / f"distill-{key}-confidence" / "student"))
    return models


def evaluation_work(
    out: Path, specs: dict[str, ModelSpec], eval_cfg: EvalConfig, name: str, key_name: str
) -> FinishedWork:
    """``out/name``, computed under the eval config and each model's :func:`spec_stamp`, its key in ``out/key_name``."""
    key = {
        "eval": to_dict(eval_cfg),
        "models": {n: spec_stamp(s.arch, s.pretrained, s.vision) for n, s in specs.items()},
    }
    return FinishedWork(out / name, key, out / key_name)


def evaluate_all(
    out: Path,
    plan: DemoPlan,
    eval_cfg: EvalConfig,
    reuse: bool,
    specs: dict[str, ModelSpec] | None = None,
    name: str = "results.json",
    key_name: str = "evaluation.json",
) -> tuple[Results, bool]:
    """Evaluate ``specs`` (every demo model) into ``out/name``, or reuse it if nothing it depends on changed;
    returns the results and whether they were reused."""
    specs = models_to_evaluate(out, plan) if specs is None else specs
    work = evaluation_work(out, specs, eval_cfg, name, key_name)
    found = work.load() if reuse else None
    if found is not None:
        return results_from_dict(found, str(work.result)), True
    log.debug("evaluating %d models (%s) into %s", len(specs), eval_cfg.attack, work.result)
    device = resolve_device(plan.device)
    models = {n: load_clip(spec, device) for n, spec in specs.items()}
    results = evaluate_models(models, eval_cfg, heads=TextHeadCache(default_cache_dir()), device=device)
    work.save({n: r.to_dict() for n, r in results.items()})
    return results, False


def protocol_gap(out: Path, plan: DemoPlan, reuse: bool) -> tuple[Results, bool]:
    """The reduced chain then the ``autoattack`` protocol on the MMT-ARD models of ``plan.gap_students``."""
    wanted = {f"{key}/mmt-ard" for key in plan.gap_students}
    specs = {k: v for k, v in models_to_evaluate(out, plan).items() if k in wanted}
    return evaluate_all(out, plan, plan.gap_config(), reuse, specs, "protocol-gap.json", "protocol-gap.key.json")
