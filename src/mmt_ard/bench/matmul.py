"""The practical compute ceiling: the rate of a large square matrix multiply on this device.

A training step is mostly matrix multiplies, so the best a step can do per second is about what
one big ``torch.mm`` does in the same dtype on the same machine. The probe grows the matrix until
one multiply takes a noticeable share of its time budget (so an emulated dtype, e.g. bf16 on a CPU
without AVX512-BF16/AMX, about 40-500x slower than float32, gets a small matrix and still takes
about the budget), then reports the best of a few repeats.

The same size is also timed through ``F.linear`` (what model layers call): on a CPU without
native bf16, oneDNN's bf16 linear runs several times faster than the emulated bf16 ``torch.mm``,
so the ceiling a step is compared with is the faster of the two.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mmt_ard.training.timing import sync

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
START_SIZE = 128
MAX_SIZE = {"cpu": 4096, "cuda": 16384}  # 3 x 16384^2 x 4 B = 3.2 GB on a GPU; 200 MB on a CPU
MAX_ITERS = 10_000


@dataclass
class MatmulRate:
    """Best-of-``repeats`` rate of ``iters`` back-to-back ``size`` x ``size`` multiplies."""

    precision: str
    size: int
    iters: int
    repeats: int
    best_s: float  # seconds of the best repeat (all ``iters`` multiplies)
    gflops: float  # torch.mm: 2 size^3 iters / best_s / 1e9
    linear_gflops: float  # the same through F.linear

    @property
    def ceiling_gflops(self) -> float:
        return max(self.gflops, self.linear_gflops)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ceiling_gflops": self.ceiling_gflops}


def _time_mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, iters: int, linear: bool = False) -> float:
    sync(a.device)
    t0 = time.perf_counter()
    for _ in range(iters):
        if linear:
            F.linear(a, b)  # a @ b.T: the same FLOPs
        else:
            torch.mm(a, b, out=out)
    sync(a.device)
    return time.perf_counter() - t0


def _operands(n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    return a, b, torch.empty(n, n, device=device, dtype=dtype)


def matmul_rate(
    device: torch.device, precision: str, target_s: float = 1.0, repeats: int = 3, max_size: int | None = None
) -> MatmulRate:
    """GFLOP/s of ``torch.mm`` and ``F.linear`` in ``precision`` ("fp32", "bf16") on ``device``, in ~``target_s``.

    The size doubles from 128 until one multiply takes ``target_s / (2 repeats)`` or the size
    reaches ``max_size`` (default 4096 on a CPU, 16384 on a GPU); each repeat then runs enough
    multiplies to fill ``target_s / repeats``. Autocast is off: the dtype is the operands' own.
    """
    dtype = DTYPES[precision]
    cap = max_size or MAX_SIZE.get(device.type, 4096)
    per_repeat = target_s / max(repeats, 1)
    with torch.autocast(device.type, enabled=False), torch.no_grad():
        n = START_SIZE
        a, b, out = _operands(n, dtype, device)
        _time_mm(a, b, out, 1)  # first call: library initialisation, allocation
        t = _time_mm(a, b, out, 1)
        while t < per_repeat / 2 and n * 2 <= cap:
            n *= 2
            a, b, out = _operands(n, dtype, device)
            _time_mm(a, b, out, 1)
            t = _time_mm(a, b, out, 1)
        iters = min(MAX_ITERS, max(1, math.ceil(per_repeat / max(t, 1e-9))))
        best = min(_time_mm(a, b, out, iters) for _ in range(max(repeats, 1)))
        _time_mm(a, b, out, 1, linear=True)
        best_linear = min(_time_mm(a, b, out, iters, linear=True) for _ in range(max(repeats, 1)))
    flops = 2.0 * n**3 * iters / 1e9
    return MatmulRate(
        precision, n, iters, max(repeats, 1), best, flops / max(best, 1e-12), flops / max(best_linear, 1e-12)
    )
