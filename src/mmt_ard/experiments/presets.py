"""Where an experiment's models come from: the built-in world, or the paper's real-scale setting.

A :class:`Preset` names the students (each with its MMT-ARD recipe, a full :class:`DistillConfig`),
the student the ablations use, and the final evaluation. ``prepare()`` builds what the preset
needs (the built-in world) or checks that it exists (the paper's teachers and data), failing early
with every missing input named.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mmt_ard.config import from_dict, read_yaml
from mmt_ard.data import build_dataset
from mmt_ard.demo import DemoPlan, run_stages, student_recipe, world_stages
from mmt_ard.distill.run import DistillConfig
from mmt_ard.errors import UserError
from mmt_ard.evaluation import EvalConfig
from mmt_ard.evaluation.metrics import check_datasets
from mmt_ard.models import ModelSpec

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
# METHOD.md section 7: the zero-shot suite as in FARE, by CLIP_benchmark name
ZERO_SHOT_SUITE = (
    "cifar10",
    "cifar100",
    "stl10",
    "cars",
    "vtab/caltech101",
    "vtab/pets",
    "vtab/flowers",
    "vtab/dtd",
    "vtab/eurosat",
    "fgvc_aircraft",
    "pcam",
    "imagenet-r",
    "imagenet_sketch",
)
PAPER_STUDENTS = {
    "vit-b32": "paper-vit-b32",
    "rn50": "paper-rn50",
    "rn101": "paper-rn101",
    "vit-b32-lora": "paper-vit-b32-lora",
}


@dataclass
class Preset:
    """The students of an experiment and how their results are measured."""

    name: str
    students: dict[str, DistillConfig]  # key -> MMT-ARD recipe (output empty)
    ablation_student: str  # the student Tables 2-4 and the sweeps use
    test_eval: EvalConfig  # the final evaluation (eps 1-4/255 and the zero-shot sets)
    prepare: Callable[[], None] = lambda: None
    analysis_images: int = 8  # Grad-CAM images
    # whose PGD makes the x' the adversarial teacher's Grad-CAM map is taken on (METHOD.md 5): the adversarial
    # teacher itself (the default: favours no student) or the "mmt-ard" student (what this project did before)
    gradcam_adversary: str = "teacher-adv"
    bound_images: int = 200
    notes: list[str] = field(default_factory=list)

    def recipe(self, student: str) -> DistillConfig:
        if student not in self.students:
            raise UserError(f"preset {self.name} has no student {student!r}; it has {', '.join(self.students)}")
        return copy.deepcopy(self.students[student])

    def only(self, students: list[str]) -> Preset:
        """The preset restricted to ``students`` (which must include the ablation student)."""
        unknown = [s for s in students if s not in self.students]
        if unknown:
            raise UserError(f"preset {self.name} has no student {unknown[0]!r}; it has {', '.join(self.students)}")
        if self.ablation_student not in students:
            raise UserError(f"--students must include {self.ablation_student} (the student of the ablations)")
        return replace(self, students={k: v for k, v in self.students.items() if k in students})

    def original(self, student: str) -> ModelSpec:
        """The undistilled student."""
        return self.students[student].student


def _no_intermediate(cfg: DistillConfig) -> DistillConfig:
    """``cfg`` without validation or checkpoints between the start and the end of training."""
    return replace(cfg, loop=replace(cfg.loop, eval_every=0, checkpoint_every=0))


def builtin_preset(world: Path, plan: DemoPlan, keep_foreign: bool = False) -> Preset:
    """The built-in world under ``world`` (built on first use, reused after), students as the demo's.
    ``keep_foreign``: refuse, rather than retrain, world stages built with another config."""
    # experiments validate only at the end (efficiency asks for curves itself)
    students = {key: _no_intermediate(student_recipe(world, plan, key)) for key in plan.students}
    test = replace(plan.eval_config(), attack="pgd", sanity=False)

    def prepare() -> None:
        run_stages(world_stages(world, plan), force=False, keep_foreign=keep_foreign)

    return Preset("builtin", students, "vit-s", test, prepare, analysis_images=8, bound_images=200)


@dataclass
class PaperInputs:
    """What the paper preset needs from the user (METHOD.md section 7)."""

    teacher_clean: str | None = None  # ViT-L-14 fine-tuned with CE on ImageNet (open_clip checkpoint)
    teacher_adv: str | None = None  # PMG-AFT ViT-L-14, vision-only state dict
    imagenet: str | None = None  # ImageFolder root with train/, val/ and holdout/
    zero_shot_root: str | None = None  # CLIP_benchmark roots: one folder per suite data set
    device: str = "auto"

    def problems(self) -> list[str]:
        """Every missing input, each with what to pass."""
        out = []
        for flag, value, kind in (
            ("--teacher-clean", self.teacher_clean, "file"),
            ("--teacher-adv", self.teacher_adv, "file"),
            ("--imagenet", self.imagenet, "dir"),
        ):
            if not value:
                out.append(f"{flag} is required for --preset paper")
            elif kind == "file" and not Path(value).is_file():
                out.append(f"{flag} {value!r} is not a file")
            elif kind == "dir" and not Path(value).is_dir():
                out.append(f"{flag} {value!r} is not a directory")
        if self.imagenet and Path(self.imagenet).is_dir():
            for split in ("train", "val", "holdout"):
                if not (Path(self.imagenet) / split).is_dir():
                    out.append(
                        f"--imagenet {self.imagenet!r} has no {split}/ folder (ImageFolder layout; holdout/ "
                        "= images set aside from train/ for model selection)"
                    )
        if self.zero_shot_root:
            missing = [n for n in ZERO_SHOT_SUITE if not (Path(self.zero_shot_root) / n.replace("/", "_")).is_dir()]
            if missing:
                out.append(
                    f"--zero-shot-root {self.zero_shot_root!r} lacks {', '.join(missing)} (one folder per "
                    "data set, as CLIP_benchmark downloads them; or leave --zero-shot-root out)"
                )
        return out


def _substitute(node: Any, values: dict[str, str]) -> Any:
    """``${NAME}`` placeholders of a shipped paper preset replaced by the user's paths."""
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str):
        for name, value in values.items():
            node = node.replace("${" + name + "}", value)
    return node


def paper_preset(inputs: PaperInputs) -> Preset:
    """ViT-L-14 teachers; ViT-B-32, RN50, RN101 and ViT-B-32-LoRA students; ImageNet (METHOD.md 7).

    Raises :class:`UserError` naming every missing input before anything is built.
    """
    problems = inputs.problems()
    if problems:
        raise UserError("the paper preset cannot start: " + "; ".join(problems))
    values = {
        "IMAGENET_ROOT": str(inputs.imagenet),
        "CLEAN_TEACHER": str(inputs.teacher_clean),
        "ADV_TEACHER": str(inputs.teacher_adv),
    }
    students = {}
    for key, name in PAPER_STUDENTS.items():
        cfg = from_dict(DistillConfig, _substitute(read_yaml(PRESET_DIR / f"{name}.yaml"), values))
        students[key] = replace(cfg, loop=replace(cfg.loop, device=inputs.device))
    evaluation = from_dict(EvalConfig, _substitute(read_yaml(PRESET_DIR / "paper-eval.yaml")["eval"], values))
    if inputs.zero_shot_root:
        root = Path(inputs.zero_shot_root)
        evaluation.zero_shot = [f"clip_benchmark:{n}:root={root / n.replace('/', '_')}" for n in ZERO_SHOT_SUITE]

    def prepare() -> None:
        """Every data set now (test, zero-shot, holdout, train): a bad folder fails before a 5000-step run."""
        check_datasets(evaluation)
        for spec in sorted({s for cfg in students.values() for s in (cfg.data, cfg.eval.dataset)}):
            build_dataset(spec)

    return Preset(
        "paper",
        students,
        "vit-b32",
        evaluation,
        prepare,
        analysis_images=16,
        bound_images=1000,
        notes=["paper preset: ImageNet-1k, 5000 steps at batch 512 per run (METHOD.md 7)"],
    )
