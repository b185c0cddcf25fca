"""One model's evaluation as a typed value: :class:`ModelResult`, and ``results.json`` of several models.

:func:`~mmt_ard.evaluation.evaluate_model` returns a :class:`ModelResult`; every module that reads
numbers (the tables, the model card, the experiments, the reports) reads its attributes, and only
:meth:`ModelResult.to_dict` / :meth:`ModelResult.from_dict` know the JSON layout. That layout is the one
``results.json`` has always had (percent, eps keys ``2/255``)::

    {"dataset", "n", "acc", "racc": {eps: v}, "sum_acc": {eps: v}, "zero_shot": {set: v},
     "skipped_attacks": {set: [..]}, "attack", "protocol", "racc_by_attack": {attack: {eps: v}},
     "sanity": {check: {"ok", "value", "detail", ...}}, "zero_shot_racc": {set: {eps: v}}}

Keys after ``zero_shot`` are written only when measured; a file of an earlier version without them
reads back with those fields ``None``, and writes back as it was. :meth:`ModelResult.flat` is the one
flattener (``racc/2/255``: the keys of ``metrics.jsonl``, ``summary.json`` and ``loop.select``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mmt_ard.errors import UserError
from mmt_ard.io import atomic_write_json

Flag = dict[str, Any]  # one sanity check: {"ok", "value", "detail"} and, when it failed, "cause" and "fix"

# written even when empty (every version wrote them); the other fields only when measured
ALWAYS = ("acc", "racc", "sum_acc", "zero_shot")
REWRITE = "rerun `mmt-ard evaluate` to rewrite the file"


@dataclass(kw_only=True)
class ModelResult:
    """Clean, robust and zero-shot accuracy of one model, in percent; eps keys as ``eps_key`` writes them."""

    dataset: str | None = None  # the data set racc is measured on (None: a file of an earlier version)
    n: int | None = None  # evaluated images of ``dataset``
    acc: float
    racc: dict[str, float] = field(default_factory=dict)  # eps -> per-sample worst case over the chain
    sum_acc: dict[str, float] = field(default_factory=dict)  # eps -> acc + racc
    zero_shot: dict[str, float] = field(default_factory=dict)  # set -> clean zero-shot accuracy
    skipped_attacks: dict[str, list[str]] | None = None  # set -> attacks left out (eval.skip_unrunnable)
    attack: str | None = None  # the chain, e.g. ``pgd+autoattack`` (None: no eps measured)
    protocol: dict[str, Any] | None = None  # EvalConfig.protocol_record(): the settings of each attack
    racc_by_attack: dict[str, dict[str, float]] | None = None  # attack -> eps -> racc after it (cumulative)
    sanity: dict[str, Flag] | None = None  # check -> flag (evaluation/sanity.py)
    zero_shot_racc: dict[str, dict[str, float]] | None = None  # set -> eps -> robust zero-shot accuracy
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know: kept as read
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)  # sum_acc/zero_shot not in the file

    def sum_acc_at(self, eps: str) -> float | None:
        """acc + racc at ``eps`` (as recorded; computed for a file without ``sum_acc``), None if not measured."""
        if eps not in self.racc:
            return None
        return self.sum_acc.get(eps, round(self.acc + self.racc[eps], 2))

    def clip_zero(self, eps: str) -> tuple[float | None, bool]:
        """Mean zero-shot accuracy over the zero-shot sets and whether it is robust: at ``eps`` where it was
        measured there (``zero_shot_racc``), else clean; ``(None, False)`` without zero-shot sets."""
        robust = [r[eps] for r in (self.zero_shot_racc or {}).values() if eps in r]
        if robust:
            return sum(robust) / len(robust), True
        clean = list(self.zero_shot.values())
        return (sum(clean) / len(clean), False) if clean else (None, False)

    def pgd_alone(self) -> dict[str, float] | None:
        """eps -> racc of PGD alone, for a chain that starts with PGD and runs more; else None."""
        chain = (self.attack or "pgd").split("+")
        if chain[0] != "pgd" or len(chain) < 2:
            return None
        return (self.racc_by_attack or {}).get("pgd") or None

    def flat(self) -> dict[str, float]:
        """Flat scalars ``acc``, ``racc/2/255``, ``sum_acc/2/255``, ``zero_shot/<set>``: the one flattener."""
        out = {"acc": self.acc}
        for group in ("racc", "sum_acc", "zero_shot"):
            out.update({f"{group}/{k}": v for k, v in getattr(self, group).items()})
        return out

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> ModelResult:
        """The inverse of :meth:`flat` (a validation row of ``metrics.jsonl`` or ``summary.json``); other keys
        (``step``, ``split``...) are left out."""
        groups: dict[str, dict[str, float]] = {"racc": {}, "sum_acc": {}, "zero_shot": {}}
        for key, value in flat.items():
            group, _, rest = key.partition("/")
            if group in groups and rest:
                groups[group][rest] = value
        return cls(acc=flat["acc"], **groups)

    def to_dict(self) -> dict[str, Any]:
        """The ``results.json`` entry (a copy: changing it leaves this result alone)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra", "absent") or (value is None and f.name not in ALWAYS):
                continue
            if f.name in self.absent and not value:  # an earlier version's file: written back as it was
                continue
            out[f.name] = json.loads(json.dumps(value))
        return {**out, **json.loads(json.dumps(self.extra))}

    @classmethod
    def from_dict(cls, data: Any, where: str = "results.json", name: str = "model") -> ModelResult:
        """A ``results.json`` entry of this or an earlier version; a hand-edited one with a number that is
        not a number, or a section that is not an object, is a :class:`~mmt_ard.errors.UserError` naming it."""
        if not isinstance(data, dict) or "acc" not in data or not isinstance(data.get("racc"), dict):
            raise UserError(f"{where}: {name} is not an evaluation result (no acc and racc); {REWRITE}")
        known = {f.name for f in fields(cls)} - {"extra", "absent"}
        for key in ("sum_acc", "zero_shot", "zero_shot_racc", "racc_by_attack", "sanity", "skipped_attacks"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                raise UserError(f"{where}: {name} {key} must be an object, got {type(data[key]).__name__}; {REWRITE}")
        numbers = {
            "acc": data["acc"],
            **{f"racc[{k}]": v for k, v in data["racc"].items()},
            **{f"sum_acc[{k}]": v for k, v in (data.get("sum_acc") or {}).items()},
            **{f"zero_shot[{k}]": v for k, v in (data.get("zero_shot") or {}).items()},
        }
        for key, value in numbers.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise UserError(f"{where}: {name} {key} must be a number in percent, got {value!r}; {REWRITE}")
        values = {k: json.loads(json.dumps(v)) for k, v in data.items() if k in known and v is not None}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra, absent=frozenset(k for k in ("sum_acc", "zero_shot") if k not in data))


def results_to_dict(results: Mapping[str, ModelResult]) -> dict[str, dict[str, Any]]:
    """``{name: result.to_dict()}``: what ``results.json`` holds."""
    return {name: r.to_dict() for name, r in results.items()}


def results_from_dict(data: Any, where: str = "results.json") -> dict[str, ModelResult]:
    """The models of a ``results.json`` (a dict of name -> entry), each read by :meth:`ModelResult.from_dict`."""
    if not isinstance(data, dict) or not data:
        raise UserError(f"{where}: expected a non-empty object of model name -> evaluation result; {REWRITE}")
    return {str(name): ModelResult.from_dict(entry, where, str(name)) for name, entry in data.items()}


def is_results(data: Any) -> bool:
    """True for a non-empty dict of model name -> evaluation entry (each with ``acc`` and a ``racc`` object)."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, dict) and "acc" in v and isinstance(v.get("racc"), dict) for v in data.values())
    )


def write_results(path: str | Path, results: Mapping[str, ModelResult]) -> None:
    """``results.json`` (atomically)."""
    atomic_write_json(path, results_to_dict(results))


def read_results(path: str | Path) -> dict[str, ModelResult]:
    """``results.json`` as typed results; an unreadable file is a UserError naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the results file {path}: {e}; pass the results.json `mmt-ard evaluate` wrote")
    return results_from_dict(data, str(path))
