"""The distillation fast path: switches that change speed, never the result beyond rounding.

Each switch is measured by ``mmt-ard bench`` (see the README's Performance section):

* ``cache_clean_logits``: the clean teacher sees only clean training images, and the input
  pipeline is deterministic (no augmentation, as in the paper), so its logits per training image
  are computed once, stored on disk and reused across epochs and runs (distill/logit_cache.py).
  The key covers the teacher's weights and head, the data set and its transform, and the precision.
* ``fuse_student_views``: one student forward over ``cat([x, x'])`` instead of two, where that is
  exact: no BatchNorm in training mode (batch statistics would mix the views) and no active
  dropout (one pass draws other masks than two).
* ``channels_last``: convolutional (ResNet) towers in channels-last memory format.
* ``teacher_precision``: the frozen teachers' precision apart from the student's (see
  :mod:`mmt_ard.precision`).
* ``compile``: ``torch.compile`` the vision towers (off by default: compilation takes minutes
  for large models and pays off only on long runs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmt_ard.errors import ConfigError


@dataclass
class FastPathConfig:
    """Speed switches of the distillation step (``fast.*`` in a distill config)."""

    cache_clean_logits: bool = True
    cache_dir: str = ""  # "" = $MMT_ARD_CACHE/teacher-logits (default ~/.cache/mmt_ard/teacher-logits)
    fuse_student_views: bool = True
    channels_last: bool = True
    compile: bool = False
    compile_backend: str = "inductor"  # a torch.compile backend ("eager" only traces: for tests)
    # the frozen teachers' precision: "" = loop.precision; bf16 with loop.precision=fp32 holds the teachers
    # in bf16 and trains the student in float32 (bf16 falls back to float32 where it is not native)
    teacher_precision: str = ""

    def validate(self) -> None:
        if self.teacher_precision not in ("", "fp32", "bf16"):
            raise ConfigError(
                f"fast.teacher_precision must be fp32, bf16 or empty (= loop.precision), got {self.teacher_precision!r}"
            )


def views_are_independent(model: nn.Module) -> bool:
    """Whether a forward over a concatenated batch equals separate forwards over its parts.

    False while any BatchNorm computes batch statistics (train mode) or any dropout is active.
    """
    for m in model.modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return False
        if isinstance(m, nn.MultiheadAttention) and m.dropout > 0:
            return False
    return True


def is_convolutional(visual: nn.Module) -> bool:
    """A vision tower built from convolutions beyond a patch embedding (a ResNet)."""
    convs = sum(isinstance(m, nn.Conv2d) for m in visual.modules())
    return convs > 1


def to_channels_last(visual: nn.Module) -> bool:
    """Put a convolutional vision tower in channels-last format; returns whether it did."""
    if not is_convolutional(visual):
        return False
    visual.to(memory_format=torch.channels_last)
    return True


def compile_tower(visual: nn.Module, backend: str = "inductor") -> None:
    """``torch.compile`` a vision tower in place (its state-dict keys do not change)."""
    visual.compile(backend=backend)
