"""``run_bench``: the whole benchmark of the distillation step, as one JSON-ready dict.

For each student of the configuration, back to back on the same machine:

1. the matrix-multiply ceiling in float32 and bf16 (once per run, :mod:`mmt_ard.bench.matmul`),
   and the frozen teacher's forward in float32, bf16 under autocast and bf16 held
   (once per run, :mod:`mmt_ard.bench.frozen`);
2. the same-loss check: the optimized step (warm clean-logit cache, fused views) and the
   reference step on the same models, batch and step in float32 must give the same loss;
3. the reference step (float32: the authors' algorithm has no other precision), the optimized
   step in each precision asked for, and in float32 (and bf16 where it is native) the optimized
   step once more with each fast-path switch turned off alone, to show what each one buys. All of
   these are timed in turn, one step of each per round, so that a machine whose speed drifts
   (shared cores, clock changes) slows every variant alike and the ratios stay fair.

bf16 runs where the device has native bf16, or for small models (where emulation is merely
slow); for large models without native bf16 it is skipped with the reason, unless ``force_bf16``.
A bf16 step holds its frozen teachers in bf16 weights (copies: the float32 variants keep theirs).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mmt_ard.bench.frozen import frozen_forward
from mmt_ard.bench.matmul import matmul_rate
from mmt_ard.bench.reference import ReleasedCodeStep, released_recipe, unsupported
from mmt_ard.bench.results import machine_info
from mmt_ard.bench.step import (
    PRECISIONS,
    BenchModels,
    Measurement,
    RandomImages,
    Timed,
    build_reference,
    build_task,
    loss_check,
    measure_interleaved,
    random_classifier,
)
from mmt_ard.devices import resolve_device
from mmt_ard.distill.fast import FastPathConfig
from mmt_ard.distill.task import DistillationTask, InnerAttackConfig, LossConfig
from mmt_ard.errors import ConfigError
from mmt_ard.io import code_version
from mmt_ard.models import arch_config
from mmt_ard.precision import bf16_native

log = logging.getLogger(__name__)

SMALL_MODELS = 30_000_000  # vision parameters of student + teachers; below this emulated bf16 still runs
SWITCHES = {"cache": "cache_clean_logits", "fuse": "fuse_student_views", "channels_last": "channels_last"}


@dataclass(frozen=True)
class Preset:
    """Architectures and sizes of a named benchmark setting."""

    teacher: str
    students: tuple[str, ...]
    batch: int
    inner_steps: int
    classes: int
    image_size: int


PRESETS = {
    # the built-in demo's distillation: tiny teachers and students on 32 px images, 3-step attack
    "builtin": Preset("mmt-vit-t", ("mmt-vit-s", "mmt-rn-s"), batch=64, inner_steps=3, classes=24, image_size=32),
    # the paper's real scale with random weights: ViT-L-14 teachers, ViT-B-32 student, 10-step attack
    "vit-l14": Preset(
        "ViT-L-14-quickgelu", ("ViT-B-32-quickgelu",), batch=8, inner_steps=10, classes=1000, image_size=224
    ),
}


@dataclass
class BenchConfig:
    """What to benchmark. Unset sizes (``None``, empty) come from ``preset``."""

    preset: str = "builtin"
    teacher: str | None = None  # architecture of both teachers
    students: list[str] = field(default_factory=list)
    batch: int | None = None
    inner_steps: int | None = None
    classes: int | None = None
    image_size: int | None = None
    precision: str = "both"  # fp32 | bf16 | bf16-teachers, a comma list of them, both (fp32,bf16) or all
    force_bf16: bool = False
    device: str = "auto"
    steps: int = 5  # timed steps per measurement
    warmup: int = 2  # untimed steps before them (after one FLOP-counted step)
    strategy: str = "confidence"
    objective: str = "embedding-l2"
    switches: list[str] = field(default_factory=lambda: list(SWITCHES))  # fast-path switches to turn off one by one
    cold: bool = True  # also time the optimized step with an empty clean-logit cache (a first epoch)
    epochs: int = 2  # the whole-run speed-up: one cold epoch, then warm ones
    compile: bool = False  # torch.compile the towers in the optimized step
    released: bool = False  # also time the released code's step (bench/reference.py: ReleasedCodeStep)
    seed: int = 0
    rtol: float = 1e-4  # same-loss check tolerance (relative)
    matmul_seconds: float = 1.0  # time budget of each matmul probe

    def resolved(self) -> Preset:
        """The preset with this config's explicit values over it; raises ConfigError on bad values."""
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown bench preset {self.preset!r}; use one of {', '.join(PRESETS)}")
        base = PRESETS[self.preset]
        teacher, students = self.teacher or base.teacher, tuple(self.students) or base.students
        sizes = [_image_size(arch) for arch in (teacher, *students)]  # also: unknown names fail here
        image_size = self.image_size
        if image_size is None:  # the preset's, unless other architectures were named
            image_size = base.image_size if (teacher, students) == (base.teacher, base.students) else max(sizes)
        p = Preset(
            teacher,
            students,
            self.batch if self.batch is not None else base.batch,
            self.inner_steps if self.inner_steps is not None else base.inner_steps,
            self.classes if self.classes is not None else base.classes,
            image_size,
        )
        for name, value, low in (
            ("epochs", self.epochs, 1),
            ("batch", p.batch, 1),
            ("inner steps", p.inner_steps, 0),
            ("classes", p.classes, 2),
            ("image size", p.image_size, 8),
            ("steps", self.steps, 1),
            ("warmup", self.warmup, 0),
        ):
            if value < low:
                raise ConfigError(f"bench {name} must be >= {low}, got {value}")
        bad = [p for p in self.precisions() if p not in PRECISIONS]
        if bad or not self.precisions():
            raise ConfigError(
                f"bench precision must be {', '.join(PRECISIONS)} (or a comma list of them), both or "
                f"all; got {self.precision!r}"
            )
        bad = [s for s in self.switches if s not in SWITCHES]
        if bad:
            raise ConfigError(f"unknown fast-path switch {bad[0]!r}; use any of {', '.join(SWITCHES)}")
        return p

    def precisions(self) -> list[str]:
        named = {"both": "fp32,bf16", "all": ",".join(PRECISIONS)}.get(self.precision, self.precision)
        return [p.strip() for p in named.split(",") if p.strip()]


def _image_size(arch: str) -> int:
    """The input resolution of an architecture (a UserError for an unknown name)."""
    size = arch_config(arch).get("vision_cfg", {}).get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def attack_and_loss(cfg: BenchConfig, preset: Preset) -> tuple[InnerAttackConfig, LossConfig]:
    attack = InnerAttackConfig(objective=cfg.objective, steps=preset.inner_steps)  # type: ignore[arg-type]
    loss = LossConfig()
    loss.strategy.name = cfg.strategy
    attack.validate()
    loss.validate()
    return attack, loss


def bf16_skip_reason(cfg: BenchConfig, device: torch.device, vision_parameters: int) -> str | None:
    """Why bf16 is not run here for models of ``vision_parameters`` in all (None: it runs)."""
    if cfg.force_bf16 or bf16_native(device) or vision_parameters < SMALL_MODELS:
        return None
    return (
        f"this {device.type} has no native bf16 (no AVX512-BF16 or AMX; PyTorch emulates bf16 there) and the "
        f"models are large ({vision_parameters / 1e6:.0f}M vision parameters): emulated bf16 would take orders "
        "of magnitude longer than float32; pass --force-bf16 to run it anyway"
    )


def frozen_teacher_forward(cfg: BenchConfig, preset: Preset, device: torch.device) -> dict[str, Any]:
    """The teacher's frozen forward in float32 and both bf16 ways (:mod:`mmt_ard.bench.frozen`)."""
    teacher = random_classifier(preset.teacher, preset.classes, cfg.seed, device)
    params = sum(p.numel() for p in teacher.clip.visual.parameters())
    wants_bf16 = any(PRECISIONS[p][1] == "bf16" for p in cfg.precisions())
    variants = ["fp32"]
    reason = bf16_skip_reason(cfg, device, params) if wants_bf16 else "bf16 not asked for"
    if reason is None:
        variants += ["bf16-autocast", "bf16-held"]
    g = torch.Generator().manual_seed(cfg.seed)
    images = torch.rand(preset.batch, 3, preset.image_size, preset.image_size, generator=g).to(device)
    log.info("bench: frozen %s forward, batch %d: %s", preset.teacher, preset.batch, ", ".join(variants))
    out = frozen_forward(teacher, images, tuple(variants), rounds=cfg.steps, warmup=max(cfg.warmup, 1))
    out.update(teacher=preset.teacher, vision_parameters=params, bf16_skipped=reason)
    return out


def whole_run(row: dict[str, Any], epochs: int) -> dict[str, Any]:
    """Images/s over a run of ``epochs`` epochs: the first with a cold cache, the rest warm.

    The bench's optimized step has a warm cache; a real run's first epoch is cold (the clean
    teacher runs and its logits are stored), so the speed-up over a whole run is less.
    """
    warm, cold = row["images_per_s"], (row["cold"] or {}).get("images_per_s")
    if cold is None:
        return {"epochs": epochs, "run_images_per_s": None, "run_speedup_vs_reference": None}
    rate = epochs / (1 / cold + (epochs - 1) / warm)
    ref = row["reference_images_per_s"]
    return {
        "epochs": epochs,
        "cold_images_per_s": cold,
        "run_images_per_s": rate,
        "cold_speedup_vs_reference": cold / ref if ref else None,
        "run_speedup_vs_reference": rate / ref if ref else None,
    }


class _Runner:
    """The measurements of one (teacher, student) pair."""

    def __init__(self, cfg: BenchConfig, preset: Preset, device: torch.device, cache_root: Path, matmul: dict) -> None:
        self.cfg, self.preset, self.device, self.cache_root, self.matmul = cfg, preset, device, cache_root, matmul
        self.attack, self.loss = attack_and_loss(cfg, preset)
        self.data = RandomImages(2 * preset.batch, preset.image_size, preset.classes, preset.batch, device, cfg.seed)

    def _json(self, m: Measurement) -> dict[str, Any]:
        return m.to_json(self.matmul[PRECISIONS[m.precision][1]]["ceiling_gflops"])  # the faster of the two

    def _timed_task(self, models: BenchModels, precision: str, fast: FastPathConfig, name: str) -> Timed:
        task = build_task(models, self.attack, self.loss, precision, fast, self.data, self.cache_root, self.cfg.seed)
        return Timed(task, self.data, self.device, precision, name, self.cfg.steps + self.cfg.warmup + 1)

    def _task_json(self, timed: Timed, m: Measurement) -> dict[str, Any]:
        out = self._json(m)
        task = timed.stepper
        assert isinstance(task, DistillationTask)
        out["fast"] = asdict(replace(task.fast, cache_dir=""))
        if task.clean_cache is not None:
            out["cache_hit_rate"] = task.clean_cache.hit_rate
        return out

    def _cold_task(self, models: BenchModels, precision: str, fast: FastPathConfig) -> Timed:
        """The optimized step with its own clean-logit cache, emptied before every step: a first epoch."""
        task = build_task(
            models, self.attack, self.loss, precision, fast, self.data, self.cache_root / "cold", self.cfg.seed
        )
        timed = Timed(task, self.data, self.device, precision, "cold", self.cfg.steps + self.cfg.warmup + 1)
        assert task.clean_cache is not None
        timed.before_step = task.clean_cache.forget
        return timed

    def _variants(self, models: BenchModels, precision: str, fast: FastPathConfig) -> list[tuple[str, Timed]]:
        """The optimized step (warm cache), cold, then each fast-path switch off alone (native precisions only)."""
        out = [("optimized", self._timed_task(models, precision, fast, "optimized"))]
        if self.cfg.cold and fast.cache_clean_logits:
            out.append(("cold", self._cold_task(models, precision, fast)))
        if precision != "fp32" and not bf16_native(self.device):
            return out
        for switch in self.cfg.switches:
            if switch == "channels_last" and not models.convolutional():
                continue  # a no-op without convolutional towers
            off = replace(fast, **{SWITCHES[switch]: False})
            out.append((switch, self._timed_task(models, precision, off, f"no-{switch}")))
        return out

    def run(self, student: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """Every step of this student, timed in turn one step each (see :func:`measure_interleaved`)."""
        cfg, preset = self.cfg, self.preset
        log.info("bench: teachers %s, student %s, batch %d", preset.teacher, student, preset.batch)
        models = BenchModels.build(preset.teacher, student, preset.classes, self.device, cfg.seed)
        fast = FastPathConfig(compile=cfg.compile)
        check, layout_check, ref_reason = None, None, None
        timeds: list[Timed] = []
        problems = unsupported(self.attack, self.loss)
        if problems:
            ref_reason = "the reference step does not implement " + "; ".join(problems)
        else:
            check, layout_check = self._loss_checks(models, fast)
            ref_step = build_reference(models, self.attack, self.loss, cfg.seed)
            timeds.append(Timed(ref_step, self.data, self.device, "fp32", "reference", cfg.steps + cfg.warmup + 1))
        released = None
        if cfg.released:  # the released code's own step: float32, like the reference
            student_c, t_clean, t_adv = models.copies()
            step = ReleasedCodeStep(student_c, t_clean, t_adv, *released_recipe(self.attack, self.loss), seed=cfg.seed)
            released = Timed(step, self.data, self.device, "fp32", "released", cfg.steps + cfg.warmup + 1)
            timeds.append(released)
        skipped, variants = [], {}
        bf16_reason = bf16_skip_reason(cfg, self.device, models.vision_parameters())
        for precision in cfg.precisions():
            if precision != "fp32" and bf16_reason:
                skipped.append({"student": student, "precision": precision, "reason": bf16_reason})
                continue
            variants[precision] = self._variants(models, precision, fast)
            timeds += [t for _, t in variants[precision]]
        results = dict(zip(map(id, timeds), measure_interleaved(timeds, cfg.warmup, cfg.steps), strict=True))
        reference = self._json(results[id(timeds[0])]) if check is not None else None
        released_json = self._json(results[id(released)]) if released is not None else None
        configs = []
        for precision, steps in variants.items():
            (_, best), *offs = steps
            optimized = self._task_json(best, results[id(best)])
            row = {
                "teacher": preset.teacher,
                "student": student,
                "precision": precision,
                "batch": preset.batch,
                "inner_steps": preset.inner_steps,
                "classes": preset.classes,
                "image_size": preset.image_size,
            }
            row.update(
                {
                    k: optimized[k]
                    for k in (
                        "images_per_s",
                        "split_s",
                        "flops_per_image",
                        "achieved_gflops",
                        "matmul_fraction",
                        "peak_memory_mb",
                        "memory_growth_mb",
                    )
                }
            )
            row["optimized"] = optimized
            row["reference"] = reference
            row["reference_images_per_s"] = reference["images_per_s"] if reference else None
            row["speedup_vs_reference"] = optimized["images_per_s"] / reference["images_per_s"] if reference else None
            row["reference_unavailable"] = ref_reason
            row["released"] = released_json  # the released code's step, when asked for (--released-code)
            row["speedup_vs_released"] = (
                optimized["images_per_s"] / released_json["images_per_s"] if released_json else None
            )
            row["loss_check"] = check  # float32, whatever this row's precision
            row["loss_check_channels_last"] = layout_check
            row["switches"] = {}
            row["cold"] = None
            for switch, timed in offs:
                m = self._task_json(timed, results[id(timed)])
                if switch == "cold":
                    row["cold"] = m
                    continue
                m["optimized_speedup"] = optimized["images_per_s"] / m["images_per_s"]
                row["switches"][switch] = m
            row.update(whole_run(row, cfg.epochs))
            configs.append(row)
        return configs, skipped

    def _loss_checks(self, models: BenchModels, fast: FastPathConfig) -> tuple[dict, dict | None]:
        """The same-loss check (warm cache, fused views), and the same with channels-last towers.

        The first is the gate. Channels-last convolutions round differently, and PGD's sign step
        can turn that into a few flipped pixel steps in x', which moves the loss by more than
        rounding; so with convolutional towers the channels-last result is reported beside it.
        """

        def check(f: FastPathConfig) -> dict[str, Any]:
            ref_step = build_reference(models, self.attack, self.loss, self.cfg.seed)
            task = build_task(models, self.attack, self.loss, "fp32", f, self.data, self.cache_root, self.cfg.seed)
            return loss_check(task, ref_step, self.data, 0, self.cfg.rtol).to_json()

        gate = check(replace(fast, channels_last=False))
        return gate, (check(fast) if models.convolutional() and fast.channels_last else None)


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    """Measure everything :class:`BenchConfig` asks for; the report as a JSON-ready dict."""
    preset = cfg.resolved()
    device = resolve_device(cfg.device)
    attack_and_loss(cfg, preset)  # bad strategy or objective: fail before any model is built
    matmul = {p: matmul_rate(device, p, cfg.matmul_seconds).to_json() for p in ("fp32", "bf16")}
    frozen = frozen_teacher_forward(cfg, preset, device)
    configs, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="mmt-ard-bench-") as tmp:
        runner = _Runner(cfg, preset, device, Path(tmp), matmul)
        for student in preset.students:
            rows, skips = runner.run(student)
            configs += rows
            skipped += skips
    return {
        "machine": machine_info(device),
        "code": code_version(),
        "settings": {
            **asdict(cfg),
            "resolved": asdict(preset),
            "device": str(device),
            "bf16_native": bf16_native(device),
        },
        "matmul": matmul,
        "frozen_forward": frozen,
        "configurations": configs,
        "skipped": skipped,
    }
