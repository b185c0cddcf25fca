"""The frozen teacher's forward in each precision, timed in turn on the same model and images.

Three ways to run a frozen vision tower (no grad, eval mode):

* ``fp32``: float32 weights, autocast off;
* ``bf16-autocast``: float32 weights under ``torch.autocast(bf16)``: what a frozen teacher did
  before teachers were held in bf16. Autocast re-casts weights that do not require grad on every
  call (its cast cache keeps only those that do);
* ``bf16-held``: weights cast to bf16 once (:func:`mmt_ard.models.frozen.hold_in`), autocast off:
  what :class:`~mmt_ard.distill.task.DistillationTask` now does with its teachers under bf16.

Each variant's logits are compared with float32's (bf16 rounding, reported, not judged).
"""

from __future__ import annotations

import copy
import time
from contextlib import nullcontext
from typing import Any

import torch

from mmt_ard.models import ZeroShotClassifier
from mmt_ard.models.frozen import Frozen, frozen_in
from mmt_ard.training.timing import sync

VARIANTS = ("fp32", "bf16-autocast", "bf16-held")


def frozen_forward(
    teacher: ZeroShotClassifier,
    images: torch.Tensor,
    variants: tuple[str, ...] = VARIANTS,
    rounds: int = 3,
    warmup: int = 1,
) -> dict[str, Any]:
    """Images/s of each variant's forward over ``images`` (B, 3, H, W), ``rounds`` timed calls each.

    The variants run in turn, one call each per round, so a machine whose speed drifts slows all alike.
    ``teacher``'s weights and dtype are not changed (the held variant runs on a copy); it is frozen
    (``requires_grad`` off), as a teacher is.
    """
    device = images.device
    plain = Frozen(teacher)  # float32 weights; computes in whatever autocast the call is made under
    runners = {}
    for name in variants:
        if name == "fp32":
            runners[name] = (plain, nullcontext)
        elif name == "bf16-autocast":
            runners[name] = (plain, lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        elif name == "bf16-held":
            twin = copy.deepcopy(teacher)
            runners[name] = (frozen_in(twin, torch.bfloat16, twin.clip.visual), nullcontext)
        else:
            raise ValueError(f"unknown frozen-forward variant {name!r}; use any of {', '.join(VARIANTS)}")
    times: dict[str, list[float]] = {name: [] for name in runners}
    logits: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for r in range(warmup + rounds):
            for name, (model, context) in runners.items():
                sync(device)
                t0 = time.perf_counter()
                with context():
                    out = model(images)
                sync(device)
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
                logits[name] = out.float()
    batch = images.shape[0]
    out: dict[str, Any] = {"batch": batch, "image_size": images.shape[-1], "rounds": rounds, "variants": {}}
    for name, seconds in times.items():
        row = {"images_per_s": batch * len(seconds) / max(sum(seconds), 1e-12), "seconds_each": seconds}
        if "fp32" in logits:
            row["max_abs_logit_diff_vs_fp32"] = float((logits[name] - logits["fp32"]).abs().max())
        out["variants"][name] = row
    if "fp32" in out["variants"]:
        base = out["variants"]["fp32"]["images_per_s"]
        for row in out["variants"].values():
            row["vs_fp32"] = row["images_per_s"] / base
    return out
