"""Wall time per named section of a training step, for ``mmt-ard bench`` and profiling.

A task calls ``with self.timer("attack"): ...`` around the parts of its step. The default timer
(:data:`NO_SECTIONS`) does nothing and costs nothing, so the hot path has no synchronisation;
an enabled :class:`Sections` synchronises the device around each section (CUDA work is
asynchronous, so a host clock would otherwise measure only the launch) and sums the seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def sync(device: torch.device | None) -> None:
    """Wait for the work queued on ``device``: CUDA runs asynchronously, so a host clock read without
    this measures only the launch (a no-op on other devices)."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class Sections:
    """Seconds spent per named section, summed over calls (``enabled=False``: a no-op)."""

    def __init__(self, device: torch.device | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.device = device
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def sync(self) -> None:
        if self.enabled:
            sync(self.device)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0
            self.counts[name] = self.counts.get(name, 0) + 1

    def reset(self) -> None:
        self.totals.clear()
        self.counts.clear()


NO_SECTIONS = Sections(enabled=False)
