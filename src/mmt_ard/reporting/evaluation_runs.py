"""A ``mmt-ard demo`` / ``mmt-ard evaluate`` folder as report tables and radar charts.

Their ``results.json`` maps a model name to the dict :func:`mmt_ard.evaluation.evaluate_model`
returns (``acc``, ``racc``/``sum_acc`` per eps, ``zero_shot``, optionally ``zero_shot_racc``,
``attack``, ``racc_by_attack``, ``sanity``). Names ``group/method`` (``vit-s/mmt-ard``) give the
paper's Table-1 layout, one column group per student architecture; ``teachers/...`` get a table of
their own, as in the demo's ``report.md``. clip-zero comes from
:func:`mmt_ard.evaluation.report.clip_zero`, so the numbers match ``results.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmt_ard.errors import UserError
from mmt_ard.evaluation.report import clip_zero
from mmt_ard.reporting.model import Cell, Figure, Radar, Run, Table

Results = dict[str, dict[str, Any]]

TEACHERS = "teachers/"
RADAR_EPS = "2/255"  # the paper's headline budget; the first eps measured when absent
RADAR_METHODS = ("baseline", "mmt-ard")
CLEAN_NOTE = "* clean zero-shot accuracy (robust zero-shot not measured; see eval.zero_shot_eps)."


def is_evaluation_results(data: Any) -> bool:
    """True for a non-empty dict of model name -> evaluation dict (with ``acc`` and ``racc``)."""
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, dict) and "acc" in v and isinstance(v.get("racc"), dict) for v in data.values())
    )


def evaluation_run(folder: Path, results: Results) -> Run:
    """Tables, radars, findings and (when the folder has ``curves.png``) the training curves."""
    check_evaluation(results, str(folder / "results.json"))
    source = "mmt-ard demo" if (folder / "report.md").is_file() else "mmt-ard evaluate"
    eps = list(dict.fromkeys(k for r in results.values() for k in r["racc"]))
    attacks = sorted({str(r.get("attack", "pgd")) for r in results.values()})
    radars = evaluation_radars(results)
    curves = folder / "curves.png"
    return Run(
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


def check_evaluation(results: Results, where: str) -> None:
    """The numbers the tables read are numbers: a hand-edited file fails here, not halfway through."""
    for name, res in results.items():
        for key in ("sum_acc", "zero_shot", "zero_shot_racc", "racc_by_attack", "sanity"):
            if res.get(key) is not None and not isinstance(res[key], dict):
                raise UserError(
                    f"{where}: {name} {key} must be an object, got {type(res[key]).__name__}; "
                    "rerun `mmt-ard evaluate` to rewrite the file"
                )
        numbers = {
            "acc": res["acc"],
            **{f"racc[{k}]": v for k, v in res["racc"].items()},
            **{f"sum_acc[{k}]": v for k, v in (res.get("sum_acc") or {}).items()},
            **{f"zero_shot[{k}]": v for k, v in (res.get("zero_shot") or {}).items()},
        }
        for key, value in numbers.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise UserError(
                    f"{where}: {name} {key} must be a number in percent, got {value!r}; "
                    "rerun `mmt-ard evaluate` to rewrite the file"
                )


def evaluation_tables(results: Results) -> list[Table]:
    """Students and teachers in the Table-1 layout, then zero-shot, PGD vs the whole chain, sanity tables."""
    students = {k: v for k, v in results.items() if not k.startswith(TEACHERS)}
    teachers = {k: v for k, v in results.items() if k.startswith(TEACHERS)}
    tables = [
        table1(group, "students" if i == 0 else "teachers", title)
        for i, (group, title) in enumerate(((students, "Students"), (teachers, "Teachers")))
        if group
    ]
    protocols = sorted({r["protocol"]["summary"] for r in results.values() if isinstance(r.get("protocol"), dict)})
    for table in tables:  # every number says which protocol made it
        table.notes += [f"racc: per-sample worst case under {p}." for p in protocols]
    for table in (zero_shot_table(results), attack_gap_table(results), sanity_table(results)):
        if table is not None:
            tables.append(table)
    return tables


def split_name(name: str) -> tuple[str, str]:
    """``vit-s/mmt-ard`` -> (``vit-s``, ``mmt-ard``); a name without ``/`` is its own group, method ``-``."""
    group, _, method = name.partition("/")
    return group, method or "-"


def table1(results: Results, table_id: str, title: str) -> Table:
    """One row per method x eps, one column group (acc, racc, sum-acc, clip-zero) per architecture."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for name, res in results.items():
        group, method = split_name(name)
        groups.setdefault(group, {})[method] = res
    methods = list(dict.fromkeys(m for g in groups.values() for m in g))
    eps_keys = list(dict.fromkeys(k for r in results.values() for k in r["racc"]))
    columns = ["method", "eps"] + [f"{g} {c}" for g in groups for c in ("acc", "racc", "sum-acc", "clip-zero")]
    rows: list[list[Cell]] = []
    for method in methods:
        for eps in eps_keys:
            row: list[Cell] = [method, eps]
            for group in groups.values():
                res = group.get(method)
                if res is None:
                    row += [None] * 4
                    continue
                racc, zero = res["racc"].get(eps), clip_zero(res, eps)
                row += [
                    res["acc"],
                    racc,
                    res.get("sum_acc", {}).get(eps) if racc is not None else None,
                    None if zero == "-" else zero,
                ]
            rows.append(row)
    starred = any(isinstance(c, str) and c.endswith("*") for row in rows for c in row[2:])
    return Table(id=table_id, title=title, columns=columns, rows=rows, notes=[CLEAN_NOTE] if starred else [])


def zero_shot_table(results: Results) -> Table | None:
    """Clean zero-shot accuracy per model and data set, or None when none was measured."""
    zs = {name: r.get("zero_shot") or {} for name, r in results.items()}
    sets = list(dict.fromkeys(s for z in zs.values() for s in z))
    if not sets:
        return None
    rows: list[list[Cell]] = [[name, *(z.get(s) for s in sets)] for name, z in zs.items()]
    return Table(id="zero-shot", title="Zero-shot accuracy (clean)", columns=["model", *sets], rows=rows)


def attack_gap_table(results: Results) -> Table | None:
    """PGD alone next to the per-sample worst case over the whole attack chain, for chains after PGD."""
    rows: list[list[Cell]] = []
    for name, res in results.items():
        chain = str(res.get("attack", "pgd")).split("+")
        pgd = res.get("racc_by_attack", {}).get("pgd")
        if chain[0] != "pgd" or len(chain) < 2 or not pgd:
            continue
        rows += [
            [name, eps, pgd[eps], worst, round(pgd[eps] - worst, 2)] for eps, worst in res["racc"].items() if eps in pgd
        ]
    if not rows:
        return None
    chains = sorted({str(res.get("attack")) for res in results.values() if res.get("racc_by_attack", {}).get("pgd")})
    return Table(
        id="pgd-vs-chain",
        title="PGD alone vs the whole attack chain",
        columns=["model", "eps", "racc PGD", "racc worst case (chain)", "gap PGD - chain"],
        rows=rows,
        notes=[
            (
                f"Chain: {', '.join(f'`{c}`' for c in chains)}. racc in the tables above is the per-sample "
                "worst case over every attack of the chain; the gap is how much PGD alone overstates "
                "robustness."
            )
        ],
    )


def sanity_table(results: Results) -> Table | None:
    """One row per model: passed checks, or each failed check with its detail and fix."""
    rows: list[list[Cell]] = []
    for name, res in results.items():
        flags = res.get("sanity") or {}
        if not flags:
            continue
        bad = {
            k: f if isinstance(f, dict) else {"detail": repr(f)}
            for k, f in flags.items()
            if not (isinstance(f, dict) and f.get("ok"))
        }
        verdict = (
            f"all {len(flags)} checks pass"
            if not bad
            else "FAILED: "
            + "; ".join(f"{k} ({f.get('detail', '')}; try: {f.get('fix', '-')})" for k, f in bad.items())
        )
        rows.append([name, verdict])
    if not rows:
        return None
    return Table(
        id="sanity", title="Sanity checks (gradient masking, weak attacks)", columns=["model", "result"], rows=rows
    )


def evaluation_radars(results: Results) -> list[Radar]:
    """One radar per student group with both ``baseline`` and ``mmt-ard`` results and a common eps."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for name, res in results.items():
        if not name.startswith(TEACHERS):
            group, method = split_name(name)
            groups.setdefault(group, {})[method] = res
    radars = []
    for group, methods in groups.items():
        if not all(m in methods for m in RADAR_METHODS):
            continue
        radar = _radar(group, [methods[m] for m in RADAR_METHODS])
        if radar is not None:
            radars.append(radar)
    return radars


def _radar(group: str, pair: list[dict[str, Any]]) -> Radar | None:
    common = [k for k in pair[0]["racc"] if all(k in r["racc"] for r in pair)]
    if not common:
        return None
    eps = RADAR_EPS if RADAR_EPS in common else common[0]
    axes = ["acc", "racc", "sum-acc"]
    values = [[r["acc"], r["racc"][eps], r.get("sum_acc", {}).get(eps, r["acc"] + r["racc"][eps])] for r in pair]
    zero = [clip_zero(r, eps) for r in pair]
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
