"""A ``mmt-ard demo`` / ``mmt-ard evaluate`` folder as report tables and radar charts.

Their ``results.json`` maps a model name to a :class:`~mmt_ard.evaluation.results.ModelResult`
entry. The tables are the evaluation's own (:func:`mmt_ard.evaluation.tables.evaluation_tables`: the
one builder per table that ``results.md`` and the demo's ``report.md`` render too): Table 1 once per
student group (``vit-s/mmt-ard`` is method ``mmt-ard`` of student ``vit-s``), the teachers last, then
zero-shot, PGD vs the chain and the sanity checks. This module adds the radar per student and its
one-line finding; a demo folder's ``demo-run.json`` and ``protocol-gap.json`` add the demo's facts, the
reduced chain vs the ``autoattack`` protocol and the timings (:mod:`mmt_ard.reporting.demo_runs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmt_ard.evaluation.results import ModelResult, results_from_dict
from mmt_ard.evaluation.tables import TEACHERS, clip_zero_cell, evaluation_tables, groups
from mmt_ard.reporting.demo_runs import add_demo, read_demo_facts, read_protocol_gap
from mmt_ard.reporting.model import Figure, Radar, Run, format_cell

Results = Mapping[str, ModelResult]

RADAR_EPS = "2/255"  # the paper's headline budget; the first eps measured when absent
RADAR_METHODS = ("baseline", "mmt-ard")


def evaluation_run(folder: Path, data: dict[str, Any]) -> Run:
    """Tables, radars, findings and (when the folder has ``curves.png``) the training curves of a
    ``results.json`` dict, with a demo folder's facts, protocol gap and timings; a hand-edited entry that
    is not numbers fails here, naming the field."""
    results = results_from_dict(data, str(folder / "results.json"))
    facts = read_demo_facts(folder)
    demo = facts is not None or (folder / "report.md").is_file()  # a demo folder of an earlier version: report.md
    source = "mmt-ard demo" if demo else "mmt-ard evaluate"
    eps = list(dict.fromkeys(k for r in results.values() for k in r.racc))
    attacks = sorted({r.attack or "pgd" for r in results.values()})
    radars = evaluation_radars(results)
    curves = folder / "curves.png"
    run = Run(
        folder=folder,
        title=f"{folder.resolve().name}: {source} results",
        kind="evaluation",
        meta={
            "source": source,
            "models": str(len(results)),
            "eps": ", ".join(eps) or "-",
            "attack": ", ".join(attacks),
        },
        summary=[_finding(r) for r in radars],
        tables=evaluation_tables(results),
        figures=[Figure(id="curves", title="Training curves", path=curves)] if curves.is_file() else [],
        radars=radars,
    )
    return add_demo(run, facts, read_protocol_gap(folder))


def evaluation_radars(results: Results) -> list[Radar]:
    """One radar per student group with both ``baseline`` and ``mmt-ard`` results and a common eps."""
    radars = []
    for group, methods in groups(results).items():
        if group == TEACHERS or not all(m in methods for m in RADAR_METHODS):
            continue
        radar = _radar(group, [methods[m] for m in RADAR_METHODS])
        if radar is not None:
            radars.append(radar)
    return radars


def _radar(group: str, pair: list[ModelResult]) -> Radar | None:
    common = [k for k in pair[0].racc if all(k in r.racc for r in pair)]
    if not common:
        return None
    eps = RADAR_EPS if RADAR_EPS in common else common[0]
    axes = ["acc", "racc", "sum-acc"]
    values = [[r.acc, r.racc[eps], r.sum_acc_at(eps) or r.acc + r.racc[eps]] for r in pair]
    zero = [format_cell(clip_zero_cell(r, eps)) for r in pair]
    if "-" not in zero:
        axes.append("clip-zero" + ("*" if any(z.endswith("*") for z in zero) else ""))
        for v, z in zip(values, zero):
            v.append(float(z.rstrip("*")))
    note = " (* clean zero-shot)" if axes[-1].endswith("*") else ""
    return Radar(
        student=group,
        axes=axes,
        series=dict(zip(RADAR_METHODS, values)),
        title=f"{group}: {' vs '.join(RADAR_METHODS)} at eps {eps}{note}",
    )


def _finding(radar: Radar) -> str:
    base, ours = (radar.series[m] for m in RADAR_METHODS)
    diffs = ", ".join(f"{a} {o - b:+.2f}" for a, b, o in zip(radar.axes, base, ours))
    return f"{radar.title}: mmt-ard minus baseline: {diffs} (points)."
