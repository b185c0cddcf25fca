"""What a ``mmt-ard demo`` folder shows beyond its ``results.json``.

* ``demo-run.json``: the facts the demo records for its report (:class:`DemoFacts`: the test set, the
  reduced chain, the seconds per stage, the machine, the code and the plan), written by the demo with
  :meth:`DemoFacts.save`;
* ``protocol-gap.json``: the MMT-ARD students under the reduced chain and then the ``autoattack``
  protocol on the same images (a results file, :class:`~mmt_ard.evaluation.results.ModelResult` per model).

:func:`add_demo` turns them into the run's facts, its paragraphs on what the numbers are, the table
"Reduced chain vs the autoattack protocol" (:func:`~mmt_ard.evaluation.tables.build_attack_gap` up to
``apgd-t``), the timings table and the machine line, so that ``mmt-ard report`` and the demo's own
``report.md`` are one page from one writer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mmt_ard.errors import UserError
from mmt_ard.evaluation.protocols import summary
from mmt_ard.evaluation.results import ModelResult, read_results
from mmt_ard.evaluation.tables import build_attack_gap
from mmt_ard.io import atomic_write_json
from mmt_ard.reporting.model import Run, Table

__all__ = ["DEMO_RUN", "PROTOCOL_GAP", "DemoFacts", "add_demo", "protocol_gap_table", "read_demo_facts"]

DEMO_RUN = "demo-run.json"
PROTOCOL_GAP = "protocol-gap.json"
KIND = "mmt-ard-demo-run"
VERSIONS = (1,)  # demo-run.json versions this code reads
GAP_UPTO = "apgd-t"  # the reduced chain ends with APGD-T; protocol-gap.json runs ``autoattack`` after it
GAP_TITLE = "Reduced chain vs the autoattack protocol"
GAP_COLUMNS = ["model", "eps", "racc reduced chain", "racc + autoattack", "gap reduced - autoattack"]
REWRITE = "rerun `mmt-ard demo` to rewrite it"


@dataclass
class DemoFacts:
    """What the demo knows about its run that ``results.json`` does not hold."""

    quick: bool
    world: str  # in words, e.g. "Built-in shapes world"
    dataset: str  # the test set racc is measured on
    test_images: int | None  # images of ``dataset`` evaluated (None: all)
    zero_shot: list[str]  # the zero-shot sets' names
    chain: str  # the reduced chain, e.g. ``pgd+apgd-ce+apgd-t``
    chain_summary: str  # its attacks with their settings (evaluation.protocols.summary)
    norm: str
    seconds: dict[str, float]  # stage -> seconds (0 = reused), the evaluation steps and ``total``
    machine: dict[str, Any]  # mmt_ard.io.environment()
    code: dict[str, str]  # mmt_ard.io.code_version()
    plan: dict[str, Any]  # the DemoPlan as a dict
    report: str = "report/report.html"  # where the demo wrote its page, relative to the run folder
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # keys a later version added

    def to_dict(self) -> dict[str, Any]:
        """``demo-run.json``: kind and version, then the facts."""
        data = asdict(self)
        return {"kind": KIND, "version": VERSIONS[-1], **data.pop("extra"), **data}

    def save(self, folder: Path) -> Path:
        """Write ``folder/demo-run.json`` (atomically); its path."""
        path = folder / DEMO_RUN
        atomic_write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, data: Any, where: str) -> DemoFacts:
        """The facts of a ``demo-run.json`` dict; a wrong kind, version or field is a UserError naming it."""
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise UserError(f"{where}: not a demo facts file (kind {KIND!r} expected); {REWRITE}")
        if data.get("version") not in VERSIONS:
            raise UserError(f"{where}: version {data.get('version')!r} is not one this mmt-ard reads; {REWRITE}")
        values = {}
        for f in fields(cls):
            if f.name == "extra" or (f.name not in data and f.name == "report"):
                continue
            value = data.get(f.name)
            if not _fits(value, _KINDS[f.name]):
                raise UserError(f"{where}: {f.name!r} must be {_NAMES[f.name]}, got {value!r}; {REWRITE}")
            values[f.name] = value
        if not all(isinstance(name, str) for name in values["zero_shot"]):
            raise UserError(f"{where}: 'zero_shot' must list set names, got {values['zero_shot']!r}; {REWRITE}")
        for stage, seconds in values["seconds"].items():
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
                raise UserError(f"{where}: seconds of {stage!r} must be a number, got {seconds!r}; {REWRITE}")
        known = {f.name for f in fields(cls)} | {"kind", "version"}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})


_KINDS: dict[str, tuple[type, ...]] = {
    "quick": (bool,),
    "world": (str,),
    "dataset": (str,),
    "test_images": (int, type(None)),
    "zero_shot": (list,),
    "chain": (str,),
    "chain_summary": (str,),
    "norm": (str,),
    "seconds": (dict,),
    "machine": (dict,),
    "code": (dict,),
    "plan": (dict,),
    "report": (str,),
}
_NAMES = {k: " or ".join("null" if t is type(None) else t.__name__ for t in v) for k, v in _KINDS.items()}


def _fits(value: Any, kinds: tuple[type, ...]) -> bool:
    """``value`` is one of ``kinds``; true and false are booleans only, never numbers."""
    if isinstance(value, bool) or bool in kinds:
        return isinstance(value, bool) and bool in kinds
    return isinstance(value, kinds)


def read_demo_facts(folder: Path) -> DemoFacts | None:
    """``folder/demo-run.json``, or None when the folder has none (an evaluate folder, an older demo)."""
    path = folder / DEMO_RUN
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON ({e}); {REWRITE}") from e
    return DemoFacts.from_dict(data, str(path))


def read_protocol_gap(folder: Path) -> dict[str, ModelResult]:
    """``folder/protocol-gap.json`` as typed results; empty when the folder has none."""
    path = folder / PROTOCOL_GAP
    return read_results(path) if path.is_file() else {}


def protocol_gap_table(gap: Mapping[str, ModelResult]) -> Table | None:
    """The reduced chain next to the reduced chain then ``autoattack`` on the same images, and the gap
    (reduced minus autoattack: how much the reduced chain overstates robustness); None without rows."""
    table = build_attack_gap(gap, upto=GAP_UPTO)
    if table is None:
        return None
    first = next(iter(gap.values()))
    images = f" ({first.n} images)" if first.n else ""
    name = (first.protocol or {}).get("name") or first.attack
    note = (
        f"Measured once, on the MMT-ARD students and a seeded subset of the test images{images}: `{name}`, "
        f"where `autoattack` = {summary(['autoattack'], {})} runs on what the reduced chain left. The gap is how "
        "much the reduced chain overstates robustness against the protocol the paper, FARE and the authors report."
    )
    return replace(table, id="reduced-chain-vs-autoattack", title=GAP_TITLE, columns=GAP_COLUMNS, notes=[note])


def add_demo(run: Run, facts: DemoFacts | None, gap: Mapping[str, ModelResult]) -> Run:
    """``run`` with the protocol gap after PGD vs the chain (before the sanity checks) and, with ``facts``,
    the demo's facts, paragraphs, timings table and machine line."""
    table = protocol_gap_table(gap) if gap else None
    if table is not None:
        run.tables.insert(_gap_position([t.id for t in run.tables]), table)
    if facts is None:
        return run
    run.meta["source"] = "mmt-ard demo" + (" (quick)" if facts.quick else "")
    run.meta["test images"] = "all" if facts.test_images is None else str(facts.test_images)
    if "total" in facts.seconds:
        run.meta["wall time"] = _duration(facts.seconds["total"])
    run.intro += intro(facts)
    run.tables.append(timings_table(facts.seconds))
    run.provenance += provenance(facts)
    return run


def _gap_position(ids: list[str]) -> int:
    """Right after PGD vs the chain; else before the sanity checks; else last."""
    if "pgd-vs-chain" in ids:
        return ids.index("pgd-vs-chain") + 1
    return ids.index("sanity") if "sanity" in ids else len(ids)


def intro(facts: DemoFacts) -> list[str]:
    """What the numbers are: the world and test images, the reduced chain, the columns of Table 1."""
    images = "every test image" if facts.test_images is None else f"{facts.test_images} test images"
    norm = {"linf": "L-inf", "l2": "L2"}.get(facts.norm, facts.norm)
    return [
        f"{facts.world}, {images} (`{facts.dataset}`); zero-shot sets: {', '.join(facts.zero_shot) or 'none'}.",
        (
            f"racc is the per-sample worst case of the demo's **reduced chain** `{facts.chain}`: "
            f"{facts.chain_summary} ({norm}, float32, eval mode). It is sized for a CPU and is *not* AutoAttack; "
            f'how far it is from the `autoattack` protocol is measured in "{GAP_TITLE}".'
        ),
        (
            "Rows per student architecture as in the paper's Table 1. `original` = the pretrained student before "
            "distillation, `baseline` = single adversarial teacher (`adv-only`), `mmt-ard` = both teachers with "
            "confidence weighting."
        ),
    ]


def timings_table(seconds: Mapping[str, float]) -> Table:
    """Seconds per stage of the run (0: a finished stage reused), the evaluation steps and the total."""
    return Table(
        id="demo-timings",
        title="Run: seconds per stage",
        columns=["stage", "seconds (0 = reused)"],
        rows=[[stage, value] for stage, value in seconds.items()],
    )


def provenance(facts: DemoFacts) -> list[str]:
    """The machine line, the packages, the code version, the plan and the run folder's files."""
    m = facts.machine
    code = ", ".join(f"{k} {v}" for k, v in facts.code.items()) or "unknown"
    packages = ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items()) or "unknown"
    return [
        (
            f"Machine: {m.get('cpu', 'unknown CPU')} ({m.get('cpu_capability', '?')}, {m.get('cpu_threads', '?')} "
            f"threads), GPUs: {', '.join(m.get('gpus') or []) or 'none'}; Python {m.get('python', '?')}; code {code}."
        ),
        f"Packages: {packages}.",
        "Plan: `" + json.dumps(facts.plan) + "`",
        (
            "In the run folder: raw numbers `results.json` and `protocol-gap.json`, training curves `curves.png`, "
            f"the log `demo.log`; this page with its figures: `{facts.report}`."
        ),
    ]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
