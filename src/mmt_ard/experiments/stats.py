"""Paired-seed statistics for the experiment tables (METHOD.md section 5, "Seeds").

Every method of a seed shares the data order and the initial student, so two methods are compared
through their per-seed differences: a difference is called significant only when the mean paired
difference exceeds twice its standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SIGNIFICANT = "†"  # the mark a table cell carries when its paired difference to the reference is significant


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of one number over seeds."""

    mean: float
    std: float
    n: int

    def cell(self, mark: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"mean": round(self.mean, 4), "std": round(self.std, 4), "n": self.n}
        if mark:
            out["mark"] = mark
        return out


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` per seed: mean, standard error and whether ``|mean| > 2 SE`` (needs 2+ seeds)."""

    mean: float
    se: float
    n: int

    @property
    def significant(self) -> bool:
        return self.n >= 2 and abs(self.mean) > 2 * self.se

    def as_dict(self) -> dict[str, Any]:
        return {"mean": round(self.mean, 4), "se": round(self.se, 4), "n": self.n, "significant": self.significant}


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no values to summarize")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Summary(mean, std, n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Differences ``a[s] - b[s]`` of the same seeds s; SE = std(d) / sqrt(n) (infinite for one seed)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values need the same non-zero number of seeds, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b)]
    s = summarize(d)
    se = s.std / math.sqrt(s.n) if s.n > 1 else math.inf
    return PairedDifference(s.mean, se, s.n)
