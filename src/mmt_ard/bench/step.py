"""Timing one kind of training step: models, a fixed random data set, the measured loop.

A *stepper* is the optimized :class:`~mmt_ard.distill.task.DistillationTask` or the
:class:`~mmt_ard.bench.reference.ReferenceStep`: both have ``training_step(batch, step)``,
``named_trainable_parameters()``, ``train()`` and a ``timer``. :func:`measure` runs a stepper the
way the training loop does (forward under autocast, backward, gradient clipping, fused AdamW),
and times the sections: the stepper's own (``teacher_clean``, ``attack``, ``teacher_adv``,
``student_forward``) and the loop's (``data``, ``student_backward``, ``optimizer``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from mmt_ard.bench.measure import MemoryTrace, count_flops
from mmt_ard.bench.reference import LossCheck, ReferenceStep, compare_losses
from mmt_ard.data.batches import batch_indices, step_generator
from mmt_ard.devices import to_device
from mmt_ard.distill.fast import FastPathConfig, is_convolutional
from mmt_ard.distill.logit_cache import CleanLogitCache
from mmt_ard.distill.task import DistillationTask, InnerAttackConfig, LossConfig
from mmt_ard.distributed import skip_to_rank
from mmt_ard.models import ModelSpec, ZeroShotClassifier, load_clip
from mmt_ard.precision import autocast
from mmt_ard.training.optim import OptimConfig, build_optimizer
from mmt_ard.training.timing import Sections, sync

# a bench precision: (the student's, the teachers'); bf16-teachers holds the teachers in bf16, trains in float32
PRECISIONS = {"fp32": ("fp32", "fp32"), "bf16": ("bf16", "bf16"), "bf16-teachers": ("fp32", "bf16")}
SECTIONS = ("data", "teacher_clean", "attack", "teacher_adv", "student_forward", "student_backward", "optimizer")
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class Stepper(Protocol):
    timer: Sections

    def training_step(self, batch: Batch, step: int) -> dict[str, torch.Tensor]: ...
    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]: ...
    def train(self, mode: bool = True) -> Any: ...


def random_classifier(arch: str, num_classes: int, seed: int, device: torch.device) -> ZeroShotClassifier:
    """``arch`` with random weights (nothing downloaded) and a random L2-normalized head (C, D)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip = load_clip(ModelSpec(arch=arch), device=device)
    head = torch.randn(num_classes, clip.embed_dim, generator=torch.Generator().manual_seed(seed + 7919))
    return ZeroShotClassifier(clip, F.normalize(head, dim=-1).to(device)).to(device)


@dataclass
class BenchModels:
    """The pristine student and teachers one configuration starts from."""

    student: ZeroShotClassifier
    teacher_clean: ZeroShotClassifier
    teacher_adv: ZeroShotClassifier
    _bf16_teachers: tuple[ZeroShotClassifier, ZeroShotClassifier] | None = None  # see copies()

    @classmethod
    def build(cls, teacher: str, student: str, num_classes: int, device: torch.device, seed: int = 0) -> BenchModels:
        return cls(
            random_classifier(student, num_classes, seed + 2, device),
            random_classifier(teacher, num_classes, seed, device),
            random_classifier(teacher, num_classes, seed + 1, device),
        )

    def vision_parameters(self) -> int:
        return sum(
            p.numel() for m in (self.student, self.teacher_clean, self.teacher_adv) for p in m.clip.visual.parameters()
        )

    def convolutional(self) -> bool:
        """Whether any tower is convolutional (where channels-last matters)."""
        return any(is_convolutional(m.clip.visual) for m in (self.student, self.teacher_clean, self.teacher_adv))

    def copies(
        self, teachers_too: bool = False, precision: str = "fp32"
    ) -> tuple[ZeroShotClassifier, ZeroShotClassifier, ZeroShotClassifier]:
        """A fresh student; the teachers are copied only if convolutional or ``teachers_too``.

        The fast path changes towers in place (channels-last, compile), and a bf16 task holds its
        teachers' towers in bf16 (in place): bf16 steps share one pair of bf16 copies, made once.
        The frozen teachers are otherwise shared, which matters for memory with ViT-L-14 teachers.
        """
        teachers = (self.teacher_clean, self.teacher_adv)
        if precision == "bf16":
            if self._bf16_teachers is None:
                self._bf16_teachers = (_copy(self.teacher_clean), _copy(self.teacher_adv))
            teachers = self._bf16_teachers

        def maybe(t: ZeroShotClassifier) -> ZeroShotClassifier:
            return _copy(t) if teachers_too or is_convolutional(t.clip.visual) else t

        return _copy(self.student), maybe(teachers[0]), maybe(teachers[1])


def _copy(model: ZeroShotClassifier) -> ZeroShotClassifier:
    """A deep copy that shares the tokenizer (its BPE tables make a plain deepcopy take a second)."""
    tokenizer = model.clip._tokenizer
    return copy.deepcopy(model, memo={id(tokenizer): tokenizer})


class RandomImages:
    """A fixed random in-memory data set: uint8 images (N, 3, S, S), labels (N,), batches by step."""

    def __init__(self, n: int, image_size: int, num_classes: int, batch: int, device: torch.device, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.images_uint8 = torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=g)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)
        self.batch_size, self.device, self.seed = batch, device, seed
        self.fingerprint = f"bench:random:seed={seed},n={n},size={image_size}"

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return len(self) // self.batch_size

    def __call__(self, step: int) -> Batch:
        """``(x, y, idx)`` of ``step``: uint8 to the device (page-locked on CUDA), then float in [0, 1]."""
        idx = batch_indices(len(self), self.batch_size, self.seed, step)
        x = to_device(self.images_uint8[idx], self.device).float().div_(255)
        return x, to_device(self.labels[idx], self.device), idx


@dataclass
class Measurement:
    """Timed steps of one stepper: wall seconds per step, sections, FLOPs, memory."""

    name: str
    precision: str
    batch: int
    step_s: list[float]
    sections_s: dict[str, float]  # mean seconds per step
    flops_per_step: int
    memory: dict[str, Any]
    loss: float  # of the last timed step

    @property
    def mean_step_s(self) -> float:
        return sum(self.step_s) / max(len(self.step_s), 1)

    @property
    def images_per_s(self) -> float:
        return self.batch * len(self.step_s) / max(sum(self.step_s), 1e-12)

    def to_json(self, matmul_gflops: float | None) -> dict[str, Any]:
        achieved = self.flops_per_step / max(self.mean_step_s, 1e-12) / 1e9
        split = {k: self.sections_s.get(k) for k in SECTIONS}
        split["other"] = self.mean_step_s - sum(v for v in split.values() if v is not None)
        return {
            "name": self.name,
            "precision": self.precision,
            "batch": self.batch,
            "timed_steps": len(self.step_s),
            "images_per_s": self.images_per_s,
            "step_s": self.mean_step_s,
            "step_s_each": self.step_s,
            "split_s": split,
            "flops_per_step": self.flops_per_step,
            "flops_per_image": self.flops_per_step / self.batch,
            "achieved_gflops": achieved,
            "matmul_gflops": matmul_gflops,
            "matmul_fraction": achieved / matmul_gflops if matmul_gflops else None,
            "peak_memory_mb": self.memory["peak_mb"],
            "memory_growth_mb": self.memory["growth_mb"],
            "memory": self.memory,
            "loss": self.loss,
        }


class Timed:
    """A stepper with its own optimizer and timer, timed one step at a time.

    Several of them can be measured in turn, one step each (:func:`measure_interleaved`), so that a
    machine whose speed drifts (shared cores, frequency changes) slows every variant alike.
    """

    def __init__(
        self,
        stepper: Stepper,
        data: RandomImages,
        device: torch.device,
        precision: str,
        name: str,
        total_steps: int,
        grad_clip: float = 1.0,
    ) -> None:
        self.stepper, self.data, self.device, self.precision, self.name = stepper, data, device, precision, name
        self.before_step: Any = None  # called before each step, outside its timing (e.g. empty a cache)
        named = stepper.named_trainable_parameters()
        self.params = [p for _, p in named]
        self.grad_clip = grad_clip
        self.opt, self.sched = build_optimizer(
            named, OptimConfig(steps=total_steps, batch_size=data.batch_size, lr=1e-5, warmup=0.0, grad_clip=grad_clip)
        )
        self.timer = Sections(device)
        stepper.timer = self.timer
        self.memory = MemoryTrace(device)
        self.times: list[float] = []
        self.flops = 0
        self.loss = torch.zeros(())

    def step(self, step: int) -> float:
        """One whole training step (data, forward, backward, optimizer); its wall time in seconds."""
        timer = self.timer
        if self.before_step is not None:
            self.before_step()
        sync(self.device)
        t0 = time.perf_counter()
        with timer("data"):
            batch = self.data(step)
        self.stepper.train()
        with autocast(self.device, PRECISIONS[self.precision][0]):  # the student's precision
            loss = self.stepper.training_step(batch, step)["loss"]
        with timer("student_backward"):
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        with timer("optimizer"):
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.opt.step()
            self.sched.step()
        sync(self.device)
        self.loss = loss.detach()
        return time.perf_counter() - t0

    def timed_step(self, step: int) -> None:
        self.memory.before_step()
        self.times.append(self.step(step))
        self.memory.after_step()

    def result(self) -> Measurement:
        sections = {k: v / max(len(self.times), 1) for k, v in self.timer.totals.items()}
        return Measurement(
            self.name,
            self.precision,
            self.data.batch_size,
            self.times,
            sections,
            self.flops,
            self.memory.to_json(),
            float(self.loss),
        )


def measure_interleaved(timeds: list[Timed], warmup: int, steps: int) -> list[Measurement]:
    """For each: one FLOP-counted step and ``warmup`` untimed steps; then ``steps`` rounds of one timed step each."""
    for t in timeds:
        t.flops = count_flops(lambda t=t: t.step(0))
        for step in range(1, warmup + 1):
            t.step(step)
        t.timer.reset()
    for step in range(warmup + 1, warmup + 1 + steps):
        for t in timeds:
            t.timed_step(step)
    return [t.result() for t in timeds]


def measure(
    stepper: Stepper,
    data: RandomImages,
    device: torch.device,
    precision: str,
    warmup: int,
    steps: int,
    name: str,
    grad_clip: float = 1.0,
) -> Measurement:
    """One FLOP-counted step, ``warmup`` untimed steps, then ``steps`` timed steps of ``stepper``."""
    timed = Timed(stepper, data, device, precision, name, steps + warmup + 1, grad_clip)
    return measure_interleaved([timed], warmup, steps)[0]


def prime_cache(task: DistillationTask, data: RandomImages, precision: str) -> None:
    """Fill the task's clean-logit cache for every image of ``data`` (teacher forwards only)."""
    cache = task.clean_cache
    if cache is None:
        return
    with autocast(data.device, PRECISIONS[precision][0]):
        for step in range(data.steps_per_epoch):
            x, _, idx = data(step)
            task.clean_teacher_logits(x, idx)
    cache.flush()
    cache.hits = cache.misses = 0


def build_task(
    models: BenchModels,
    attack: InnerAttackConfig,
    loss: LossConfig,
    precision: str,
    fast: FastPathConfig,
    data: RandomImages,
    cache_root: Path,
    seed: int = 0,
) -> DistillationTask:
    """The optimized task on fresh copies of the models; with a warm clean-logit cache if ``fast`` says so."""
    student_precision, teacher_precision = PRECISIONS[precision]
    student, t_clean, t_adv = models.copies(teachers_too=fast.compile, precision=teacher_precision)
    cache = None
    if fast.cache_clean_logits:
        fast = replace(fast, cache_dir=str(cache_root))
        cache = CleanLogitCache.open(cache_root, t_clean, data.fingerprint, len(data), teacher_precision)
    task = DistillationTask(
        student,
        t_clean,
        t_adv,
        copy.deepcopy(attack),
        copy.deepcopy(loss),
        seed=seed,
        precision=student_precision,
        teacher_precision=teacher_precision,
        fast=fast,
        clean_cache=cache,
    )
    prime_cache(task, data, precision)
    return task


def build_reference(models: BenchModels, attack: InnerAttackConfig, loss: LossConfig, seed: int = 0) -> ReferenceStep:
    """The reference step on fresh copies of the models (the plain memory format, uncompiled)."""
    student, t_clean, t_adv = models.copies()
    return ReferenceStep(student, t_clean, t_adv, copy.deepcopy(attack), copy.deepcopy(loss), seed=seed)


def loss_check(
    task: DistillationTask, reference: ReferenceStep, data: RandomImages, step: int = 0, rtol: float = 1e-4
) -> LossCheck:
    """Both steps' loss on the batch of ``step``, float32, before either has taken an optimizer step.

    Also records how far the two x' are apart: PGD's sign step turns rounding differences (e.g.
    channels-last convolutions) into whole flipped steps, which then move the loss beyond rounding.
    """
    x, y, idx = data(step)
    with torch.no_grad():
        t_clean = reference.teacher_clean(x)
    x_ref = reference.attack(x, t_clean, step)
    x_opt = task.adversarial_examples(x, y, t_clean, skip_to_rank(step_generator(task.seed, step), x))
    task.train()
    reference.train()
    optimized = float(task.training_step((x, y, idx), step)["loss"].detach())
    ref = float(reference.training_step((x, y, idx), step)["loss"].detach())
    check = compare_losses(optimized, ref, rtol)
    check.x_adv_max_diff = float((x_opt - x_ref).abs().max())
    check.x_adv_differing = int((x_opt != x_ref).sum())
    return check
