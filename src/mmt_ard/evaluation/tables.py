"""The evaluation tables, each built once as a :class:`~mmt_ard.tables.Table` from typed results.

``results.md`` (``mmt-ard evaluate``), the demo's ``report.md`` and ``mmt-ard report``'s Markdown and
HTML pages all render these objects (:func:`mmt_ard.tables.markdown_table`, reporting/html.py):

=========================  =========================================================================
:func:`build_table1`       the paper's Table 1, one table per student group (``vit-s/mmt-ard`` is
                           method ``mmt-ard`` of group ``vit-s``): rows method x eps, columns acc,
                           racc, sum-acc, clip-zero; ``teachers/...`` last. One group per table, so
                           no table is wider than a page.
:func:`build_zero_shot`    clean zero-shot accuracy per model and data set
:func:`build_attack_gap`   PGD alone (or the chain up to an attack) next to the per-sample worst case
                           of the whole chain, and the gap (how much the shorter chain overstates)
:func:`build_sanity`       the sanity checks per model: passed, or each failure with cause and fix
:func:`evaluation_tables`  all of them, in that order, leaving out the empty ones
=========================  =========================================================================

clip-zero is the mean zero-shot accuracy over the zero-shot sets: robust at that eps where it was
measured (``eval.zero_shot_eps``), else clean, as text marked ``*``.
"""

from __future__ import annotations

from collections.abc import Mapping

from mmt_ard.evaluation.results import ModelResult
from mmt_ard.tables import Cell, Table

TEACHERS = "teachers"  # the group of ``teachers/...``: its table comes last
CLEAN_NOTE = "* clean zero-shot accuracy (robust zero-shot not measured; see eval.zero_shot_eps)."

Results = Mapping[str, ModelResult]


def split_name(name: str) -> tuple[str, str]:
    """``vit-s/mmt-ard`` -> (``vit-s``, ``mmt-ard``); a name without ``/`` is its own group, method ``-``."""
    group, _, method = name.partition("/")
    return group, method or "-"


def groups(results: Results) -> dict[str, dict[str, ModelResult]]:
    """group -> method -> result, groups in order of appearance with ``teachers`` last."""
    out: dict[str, dict[str, ModelResult]] = {}
    for name, res in results.items():
        group, method = split_name(name)
        out.setdefault(group, {})[method] = res
    return {g: out[g] for g in sorted(out, key=lambda g: g == TEACHERS)}


def clip_zero_cell(result: ModelResult, eps: str) -> Cell:
    """The clip-zero cell at ``eps``: a number when robust, ``"12.34*"`` when clean, None without zero-shot."""
    value, robust = result.clip_zero(eps)
    if value is None:
        return None
    return round(value, 2) if robust else f"{value:.2f}*"


def protocol_notes(results: Results) -> list[str]:
    """``racc: per-sample worst case under ...`` for every protocol the results were measured with."""
    summaries = sorted({str(r.protocol["summary"]) for r in results.values() if r.protocol and "summary" in r.protocol})
    return [f"racc: per-sample worst case under {s}." for s in summaries]


def build_table1(results: Results, protocols: bool = True) -> list[Table]:
    """Table 1, one :class:`Table` per group (id ``table1-<group>``): a row per method x eps with acc,
    racc, sum-acc and clip-zero. ``protocols``: a note naming the attack protocol of the numbers."""
    tables = []
    for group, methods in groups(results).items():
        eps_keys = list(dict.fromkeys(k for r in methods.values() for k in r.racc))
        rows: list[list[Cell]] = [
            [method, eps, res.acc, res.racc.get(eps), res.sum_acc_at(eps), clip_zero_cell(res, eps)]
            for method, res in methods.items()
            for eps in eps_keys
        ]
        starred = any(isinstance(row[5], str) for row in rows)
        tables.append(
            Table(
                id=f"table1-{group}",
                title=f"Table 1: {group}",
                columns=["method", "eps", "acc", "racc", "sum-acc", "clip-zero"],
                rows=rows,
                notes=([CLEAN_NOTE] if starred else []) + (protocol_notes(methods) if protocols else []),
            )
        )
    return tables


def build_zero_shot(results: Results) -> Table | None:
    """Clean zero-shot accuracy per model and data set, or None when none was measured."""
    sets = list(dict.fromkeys(s for r in results.values() for s in r.zero_shot))
    if not sets:
        return None
    rows: list[list[Cell]] = [[name, *(r.zero_shot.get(s) for s in sets)] for name, r in results.items()]
    return Table(id="zero-shot", title="Zero-shot accuracy (clean)", columns=["model", *sets], rows=rows)


def build_attack_gap(results: Results, upto: str = "pgd") -> Table | None:
    """racc after the chain up to ``upto`` next to the worst case over the whole chain, and the gap
    (shorter minus whole, never negative): for results whose chain runs more attacks after ``upto``.

    ``upto="pgd"`` (chains that start with PGD): PGD alone vs the whole chain; the demo's
    ``upto="apgd-t"``: its reduced chain vs the reduced chain then ``autoattack``.
    """
    rows: list[list[Cell]] = []
    chains = []
    for name, res in results.items():
        chain = (res.attack or "pgd").split("+")
        shorter = (res.racc_by_attack or {}).get(upto)
        if upto not in chain or chain[-1] == upto or not shorter or (upto == "pgd" and chain[0] != "pgd"):
            continue
        chains.append(res.attack)
        rows += [
            [name, eps, shorter[eps], worst, round(shorter[eps] - worst, 2)]
            for eps, worst in res.racc.items()
            if eps in shorter
        ]
    if not rows:
        return None
    label = "PGD" if upto == "pgd" else f"chain through {upto}"
    return Table(
        id="pgd-vs-chain" if upto == "pgd" else f"{upto}-vs-chain",
        title=f"{'PGD alone' if upto == 'pgd' else 'The chain through ' + upto} vs the whole attack chain",
        columns=["model", "eps", f"racc {label}", "racc worst case (chain)", f"gap {label} - chain"],
        rows=rows,
        notes=[
            (
                f"Chain: {', '.join(f'`{c}`' for c in dict.fromkeys(chains))}. racc in the other tables is the "
                f"per-sample worst case over every attack of the chain; the gap is how much {label} alone "
                "overstates robustness."
            )
        ],
    )


def build_sanity(results: Results) -> Table | None:
    """One row per model with sanity checks: all passed, or each failed check with detail, cause and fix."""
    rows: list[list[Cell]] = []
    for name, res in results.items():
        flags = res.sanity or {}
        if not flags:
            continue
        bad = {
            k: f if isinstance(f, dict) else {"detail": repr(f)}
            for k, f in flags.items()
            if not (isinstance(f, dict) and f.get("ok"))
        }
        verdict = (
            f"all checks pass ({', '.join(flags)})"
            if not bad
            else "; ".join(
                f"{k} FAILED: {f.get('detail', '')} (likely {f.get('cause', '-')}; try: {f.get('fix', '-')})"
                for k, f in bad.items()
            )
        )
        rows.append([name, verdict])
    if not rows:
        return None
    return Table(
        id="sanity", title="Sanity checks (gradient masking, weak attacks)", columns=["model", "result"], rows=rows
    )


def evaluation_tables(results: Results, protocols: bool = True) -> list[Table]:
    """Table 1 per group, then zero-shot, PGD vs the whole chain and the sanity checks (those with rows)."""
    extra = (build_zero_shot(results), build_attack_gap(results), build_sanity(results))
    return build_table1(results, protocols) + [t for t in extra if t is not None]
