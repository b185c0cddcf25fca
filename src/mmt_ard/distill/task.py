"""The distillation task: student, frozen teachers, inner attack, loss and strategy in one module.

One step (METHOD.md sections 2-3)::

    x'      = PGD on the student (eval mode) within eps of x, objective `attack.objective`
    z_Torg  = T_org(x),  z_Tadv = T_adv(x')          no grad, always eval mode
    z_S, z_S' = S(x), S(x')                          train mode
    loss    = strategy(z...) + gamma * mean KL( softmax(z_S).detach() || softmax(z_S') )

The fast path (distill/fast.py) reads ``z_Torg(x)`` from a per-image cache when the batch carries
its data set indices, runs one student forward over both views where that is exact, and keeps
ResNet towers channels-last; ``timer`` (training/timing.py) measures each part for the bench.

Teachers are wrapped in :class:`~mmt_ard.models.frozen.Frozen`: ``task.train()`` never reaches
them, so their BatchNorm statistics and weights cannot change. With ``precision="bf16"`` their
vision towers are cast to bf16 once (in place: pass copies if you need the float32 models again)
and run with autocast off; the student trains under the loop's bf16 autocast.
``teacher_precision`` sets the teachers' precision apart from the student's
(``fast.teacher_precision``): bf16 teachers with a float32 student, where bf16 autocast does not
pay for the student. All comparisons between models are in class-logit space, so teachers and
student may have different embedding sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmt_ard import distributed
from mmt_ard.attacks import OBJECTIVES, PGDConfig, kl_logits, pgd
from mmt_ard.attacks.objectives import ObjectiveFn, check_random_start
from mmt_ard.data.batches import step_generator
from mmt_ard.devices import to_device
from mmt_ard.distill.fast import FastPathConfig, compile_tower, to_channels_last, views_are_independent
from mmt_ard.distill.logit_cache import CleanLogitCache
from mmt_ard.distill.strategies import (
    DistillLogits,
    StrategyConfig,
    build_strategy,
    check_strategy_options,
    confidence,
)
from mmt_ard.distributed import skip_to_rank
from mmt_ard.errors import ConfigError
from mmt_ard.models.clip import ZeroShotClassifier
from mmt_ard.models.frozen import Frozen, frozen_in
from mmt_ard.precision import compute_dtype
from mmt_ard.registry import Registry
from mmt_ard.training.timing import NO_SECTIONS, Sections

InnerObjective = Literal["embedding-l2", "kl-clean-teacher", "ce"]
InnerFactory = Callable[
    [ZeroShotClassifier, torch.Tensor, torch.Tensor, torch.Tensor, "InnerAttackConfig"], ObjectiveFn
]
INNER_OBJECTIVES: Registry[InnerFactory] = Registry("inner attack objective")


@INNER_OBJECTIVES.register("embedding-l2")
def _embedding_l2(student, x, y, teacher_clean_logits, cfg):  # type: ignore[no-untyped-def]
    """||f_S(x + delta) - f_S(x)||^2 (paper eq. 2, FARE); normalized unless cfg says otherwise."""
    return OBJECTIVES.get("embedding-l2")(student, x, normalize=cfg.normalize_embeddings)


@INNER_OBJECTIVES.register("kl-clean-teacher")
def _kl_clean_teacher(student, x, y, teacher_clean_logits, cfg):  # type: ignore[no-untyped-def]
    """KL(softmax(z_Torg(x)) || softmax(z_S(x + delta))) (the authors' released code)."""
    return OBJECTIVES.get("kl")(student, x, target=F.softmax(teacher_clean_logits.float(), dim=-1))


@INNER_OBJECTIVES.register("ce")
def _ce(student, x, y, teacher_clean_logits, cfg):  # type: ignore[no-untyped-def]
    """Cross-entropy with the true label (TeCoA)."""
    return OBJECTIVES.get("ce")(student, x, labels=y)


@dataclass
class InnerAttackConfig(PGDConfig):
    """The training attack on the student; defaults of METHOD.md section 2."""

    objective: InnerObjective = "embedding-l2"
    eps: float = 2 / 255
    steps: int = 10
    step_size: float | None = 1 / 255
    # embedding-l2 only: compare L2-normalized embeddings (METHOD.md); false = FARE's release
    normalize_embeddings: bool = True

    def validate(self) -> None:
        super().validate()
        check_random_start(self.objective, self)


@dataclass
class LossConfig:
    """Outer-loss weights. ``gamma=0`` switches the cross-modal consistency term off."""

    lambda_adv: float = 3.0
    lambda_org: float = 0.5
    temperature: float = 1.0
    gamma: float = 1.0
    strategy: StrategyConfig = field(default_factory=StrategyConfig)

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"loss.temperature must be positive, got {self.temperature}")
        if min(self.lambda_adv, self.lambda_org, self.gamma) < 0:
            raise ConfigError("loss.lambda_adv, loss.lambda_org and loss.gamma must be >= 0")
        check_strategy_options(self.strategy)


def _tower(model: nn.Module) -> nn.Module:
    """The part of a teacher worth holding in low precision: a CLIP's vision tower, else all of it."""
    clip = getattr(model, "clip", None)
    return clip.visual if clip is not None else model


class DistillationTask(nn.Module):
    """MMT-ARD: a student CLIP learns from a clean and an adversarial teacher."""

    def __init__(
        self,
        student: ZeroShotClassifier,
        teacher_clean: ZeroShotClassifier,
        teacher_adv: ZeroShotClassifier,
        attack: InnerAttackConfig,
        loss: LossConfig,
        seed: int = 0,
        precision: str = "fp32",
        teacher_precision: str | None = None,
        lr_scale: Callable[[int], float] = lambda step: 1.0,
        fast: FastPathConfig | None = None,
        clean_cache: CleanLogitCache | None = None,
    ) -> None:
        super().__init__()
        for name, t in (("clean", teacher_clean), ("adversarial", teacher_adv)):
            if t.num_classes != student.num_classes:
                raise ConfigError(f"the {name} teacher has {t.num_classes} classes, the student {student.num_classes}")
        attack.validate()
        loss.validate()
        self.student = student
        # under bf16 the teachers' vision towers are held in bf16 (cast once; heads stay float32)
        self.teacher_precision = teacher_precision or precision
        low = compute_dtype(self.teacher_precision)
        self.teacher_clean: Frozen = frozen_in(teacher_clean, low, _tower(teacher_clean))
        self.teacher_adv: Frozen = frozen_in(teacher_adv, low, _tower(teacher_adv))
        self.attack_cfg = attack
        self.loss_cfg = loss
        self.strategy = build_strategy(loss.strategy)
        self.seed = seed
        self.precision = precision
        self.lr_scale = lr_scale
        self.fast = fast or FastPathConfig()
        self.clean_cache = clean_cache  # None: the clean teacher runs every step
        self.timer: Sections = NO_SECTIONS
        self.teacher_scale = float(getattr(teacher_adv, "scale", 100.0))  # z = s * cosine (released-code)
        towers = [m.clip.visual for m in (student, teacher_clean, teacher_adv) if hasattr(m, "clip")]
        if self.fast.channels_last:
            for visual in towers:
                to_channels_last(visual)
        if self.fast.compile:
            for visual in towers:
                compile_tower(visual, self.fast.compile_backend)

    def named_trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]

    def adversarial_examples(
        self, x: torch.Tensor, y: torch.Tensor, teacher_clean_logits: torch.Tensor, gen: torch.Generator
    ) -> torch.Tensor:
        """The inner maximization on the student (eval mode inside :func:`pgd`)."""
        cfg = self.attack_cfg
        objective = INNER_OBJECTIVES.get(cfg.objective)(self.student, x, y, teacher_clean_logits, cfg)
        return pgd(self.student, x, objective, self.attack_cfg, precision=self.precision, generator=gen)

    def clean_teacher_logits(self, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        """``z_Torg(x)`` (B, C): from the cache where it holds the whole batch, else computed (and stored).

        On any miss the teacher runs on the whole batch: a fixed shape (a compiled teacher does not
        recompile) and exactly the computation of a run without the cache. Under torchrun the rows
        are exchanged between ranks until every rank holds every row (see distill/logit_cache.py).
        """
        cache = self.clean_cache
        if cache is None or idx is None:
            with torch.no_grad():
                return self.teacher_clean(x)
        cached, hit = cache.lookup(idx)  # on the host: no device sync
        if cache.last_hit_rate == 1.0:
            logits = to_device(cached, x.device)
        else:
            with torch.no_grad():
                logits = self.teacher_clean(x)
            if distributed.world_size() == 1:
                miss = torch.from_numpy(np.flatnonzero(~hit.numpy()))  # host arrays, no tensor reads
                cache.store(idx[miss], logits[to_device(miss, x.device)])
        if distributed.world_size() > 1 and not cache.complete:  # the same decision on every rank
            cache.exchange(idx, logits)
        return logits

    def student_views(self, x: torch.Tensor, x_adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z_S(x), z_S(x')``: one forward over both where exact (see :func:`views_are_independent`)."""
        if self.fast.fuse_student_views and views_are_independent(self.student):
            s_clean, s_adv = self.student(torch.cat([x, x_adv])).chunk(2)
            return s_clean, s_adv
        return self.student(x), self.student(x_adv)

    def training_step(self, batch: tuple[torch.Tensor, ...], step: int) -> dict[str, torch.Tensor]:
        """The loss terms of one step; ``batch`` is ``(x, y)`` or ``(x, y, data set indices)``."""
        x, y = batch[0], batch[1]
        idx = batch[2] if len(batch) > 2 else None
        with self.timer("teacher_clean"):
            t_clean = self.clean_teacher_logits(x, idx)  # (B, C)
        # random starts as if drawn for the whole global batch: the same for a sample in any world size
        gen = skip_to_rank(step_generator(self.seed, step), x)
        with self.timer("attack"):
            x_adv = self.adversarial_examples(x, y, t_clean, gen)
        with self.timer("teacher_adv"), torch.no_grad():
            t_adv = self.teacher_adv(x_adv)  # (B, C)
        with self.timer("student_forward"):
            s_clean, s_adv = self.student_views(x, x_adv)  # (B, C) each
            cfg = self.loss_cfg
            logits = DistillLogits(
                s_clean,
                s_adv,
                t_clean,
                t_adv,
                cfg.temperature,
                cfg.lambda_adv,
                cfg.lambda_org,
                lr_scale=self.lr_scale(step),
                labels=y,
                teacher_scale=self.teacher_scale,
            )
            terms = self.strategy(logits)
            cm = kl_logits(s_clean.detach(), s_adv).mean()
            terms["loss_cm"] = cm
            terms["loss"] = terms["loss_kd"] + cfg.gamma * cm if cfg.gamma > 0 else terms["loss_kd"]
        terms["conf_adv"] = confidence(t_adv).mean()
        terms["conf_org"] = confidence(t_clean).mean()
        if self.clean_cache is not None and idx is not None:
            terms["clean_cache_hits"] = self.clean_cache.last_hit_rate  # a host float: no device read
        with torch.no_grad():
            terms["student_acc_adv"] = (s_adv.argmax(-1) == y).float().mean()
        return terms

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.student.clip.model.state_dict()

    def load_model_state(self, state: dict[str, torch.Tensor]) -> None:
        self.student.clip.model.load_state_dict(state)

    def extra_state(self) -> dict[str, Any]:
        return {"strategy": self.strategy.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.strategy.load_state_dict(state.get("strategy", {}))
