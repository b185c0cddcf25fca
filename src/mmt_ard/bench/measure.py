"""What one benchmark step is measured by besides time: FLOPs and memory.

* FLOPs: :class:`torch.utils.flop_counter.FlopCounterMode` over one whole step (forwards, the
  attack's backward passes, the loss backward). It counts matrix multiplies, convolutions and
  attention; elementwise work is not counted, which is the usual convention for model FLOPs.
  PyTorch has no formula for the CPU attention kernel (``_scaled_dot_product_flash_attention_for_cpu``),
  so the standard attention formulas are registered for it here; otherwise ViT attention would
  count on a GPU and not on a CPU.
* Memory: on CUDA, the allocator's peak per step (reset before each step) and what stays
  allocated after it; on a CPU, the resident set size after each step (``/proc/self/statm``) and
  the process's high-water mark (``VmHWM``).
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

MB = 2**20


def _cpu_attention_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return int(flop_counter.sdpa_flop_count(query, key, value))


def _cpu_attention_backward_flops(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return int(flop_counter.sdpa_backward_flop_count(grad_out, query, key, value))


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    extra: dict[Any, Callable[..., int]] = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_attention_flops
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        extra[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _cpu_attention_backward_flops
    return extra


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything ``fn()`` runs (forward and backward), as FlopCounterMode counts them."""
    with FlopCounterMode(display=False, custom_mapping=_extra_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())


def rss_mb() -> float | None:
    """Resident set size of this process in MB (Linux ``/proc``); None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def process_peak_mb() -> float | None:
    """The process's peak resident set size in MB (``VmHWM``, else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB
    except (OSError, ValueError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return peak * 1024 / MB if peak else None


@dataclass
class MemoryTrace:
    """Memory around each timed step: peak during the step and what remains after it."""

    device: torch.device
    peaks: list[float] = field(default_factory=list)  # MB: CUDA allocator peak of the step, or RSS after it (CPU)
    after: list[float] = field(default_factory=list)  # MB: allocated (CUDA) or RSS (CPU) after the step
    reserved: list[float] = field(default_factory=list)  # MB: CUDA allocator's reserved peak of the step

    @property
    def kind(self) -> str:
        return "cuda-max-allocated" if self.device.type == "cuda" else "cpu-rss-after-step"

    def before_step(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def after_step(self) -> None:
        if self.device.type == "cuda":
            self.peaks.append(torch.cuda.max_memory_allocated(self.device) / MB)
            self.after.append(torch.cuda.memory_allocated(self.device) / MB)
            self.reserved.append(torch.cuda.max_memory_reserved(self.device) / MB)
            return
        rss = rss_mb()
        if rss is not None:
            self.peaks.append(rss)
            self.after.append(rss)

    @property
    def peak_mb(self) -> float | None:
        return max(self.peaks) if self.peaks else None

    @property
    def growth_mb(self) -> float | None:
        """Memory left after the last timed step minus after the first (0 with one timed step)."""
        return self.after[-1] - self.after[0] if self.after else None

    def to_json(self) -> dict[str, Any]:
        peak = max(self.reserved, default=None) if self.device.type == "cuda" else process_peak_mb()
        return {
            "kind": self.kind,
            "peak_mb": self.peak_mb,
            "growth_mb": self.growth_mb,
            "after_step_mb": self.after,
            "process_peak_mb": peak,  # CPU: VmHWM of the whole process; CUDA: the allocator's reserved peak
        }
