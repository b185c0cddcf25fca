"""The demo's plan: its sizes and its students' recipes, read from a YAML preset.

The shipped presets are ``default`` (``mmt-ard demo``) and ``quick`` (``--quick``), in
``mmt_ard/demo/presets/``; a preset may start from another with ``base: NAME`` and change only
some keys. Every value is a keyword: ``DemoPlan.load("quick", distill_steps=6)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmt_ard.config import apply_overrides, from_dict, read_yaml
from mmt_ard.errors import ConfigError
from mmt_ard.evaluation import EvalConfig
from mmt_ard.evaluation.protocols import APGDSettings, PGDSettings, TargetedSettings

__all__ = ["PRESET_DIR", "REDUCED_CHAIN", "TEACHER_ARCH", "DemoPlan", "StudentRecipe", "preset_names"]

PRESET_DIR = Path(__file__).resolve().parent / "presets"
TEACHER_ARCH = "mmt-vit-t"  # both teachers start from the teacher-size ViT pretrained here
# the demo's evaluation chain: PGD, then APGD-CE and APGD-T under their own names with CPU-sized settings
REDUCED_CHAIN = "pgd+apgd-ce+apgd-t"


@dataclass
class StudentRecipe:
    """How one student is distilled with MMT-ARD (``confidence`` weighting, gamma 1)."""

    arch: str
    start: str  # the pretraining stage it starts from: ``pretrain-<start>``
    lr: float
    eps: float  # the training attack's budget
    step_size: float  # the training attack's step
    lora: list[str] = field(default_factory=list)  # LoRA target modules; empty: full fine-tuning
    baseline: bool = True  # also distilled with the baseline (``adv-only``), and its original evaluated


@dataclass
class DemoPlan:
    """Sizes and students of the demo; :meth:`load` reads them from a preset (see ``presets/default.yaml``)."""

    pretrain_teacher_steps: int
    pretrain_student_steps: int
    pretrain_batch: int
    pretrain_lr: float
    caption_n: int
    train_n: int
    clean_steps: int
    adv_steps: int
    distill_steps: int
    distill_batch: int
    inner_steps: int
    eval_limit: int
    eval_steps: int
    apgd_iterations: int  # the reduced chain's APGD iterations (the autoattack protocol: 100)
    apgd_targets: int  # the reduced chain's APGD-T target classes (the autoattack protocol: 9)
    sanity_samples: int
    gap_limit: int  # test images on which the reduced chain is compared with the autoattack protocol
    gap_students: list[str]  # whose MMT-ARD model that comparison attacks
    students: dict[str, StudentRecipe]
    device: str = "auto"

    @classmethod
    def load(cls, preset: str | Path = "default", overrides: list[str] | None = None, **values: Any) -> DemoPlan:
        """The plan of ``preset`` (a shipped name or a YAML file) <- keyword ``values`` <- ``a.b=c`` overrides."""
        data = _read(preset, set())
        data.update(values)
        plan = from_dict(cls, apply_overrides(data, list(overrides or [])), where="")
        unknown = [s for s in plan.gap_students if s not in plan.students]
        if unknown:
            raise ConfigError(
                f"gap_students names {unknown[0]!r}, which is not among students: {', '.join(plan.students)}"
            )
        return plan

    @staticmethod
    def default(device: str = "auto") -> DemoPlan:
        """``mmt-ard demo``'s plan."""
        return DemoPlan.load("default", device=device)

    @staticmethod
    def quick(device: str = "auto") -> DemoPlan:
        """``mmt-ard demo --quick``'s plan: the CI smoke size."""
        return DemoPlan.load("quick", device=device)

    def pretrained(self) -> dict[str, str]:
        """The pretraining stages the students start from: ``start -> arch``, in the students' order."""
        out: dict[str, str] = {}
        for recipe in self.students.values():
            out.setdefault(recipe.start, recipe.arch)
        return out

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


def preset_names() -> list[str]:
    """The shipped plans."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _read(preset: str | Path, seen: set[Path]) -> dict[str, Any]:
    """A preset's mapping with its ``base`` chain merged under it (a base's sections merged key by key)."""
    path = Path(preset)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = PRESET_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown demo plan {str(preset)!r}; pass a YAML file or one of: {', '.join(preset_names())}"
            )
    if path.resolve() in seen:
        raise ConfigError(f"demo plan {str(path)!r} is its own base")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = path.parent / f"{base}.yaml" if (path.parent / f"{base}.yaml").is_file() else base
    return _merge(_read(base_path, seen | {path.resolve()}), data)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        base[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return base
