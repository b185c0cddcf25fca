"""The evaluation tables as Markdown text: the renderings of :mod:`mmt_ard.evaluation.tables`' builders.

Kept for callers that want one string; the tables themselves are built once, in
:mod:`~mmt_ard.evaluation.tables`, and rendered by :func:`mmt_ard.tables.markdown_table`.
"""

from __future__ import annotations

from collections.abc import Mapping

from mmt_ard.evaluation.results import ModelResult
from mmt_ard.evaluation.tables import build_attack_gap, build_sanity, build_table1, build_zero_shot, clip_zero_cell
from mmt_ard.tables import cell_text
from mmt_ard.tables import markdown_table as render


def clip_zero(result: ModelResult, eps: str) -> str:
    """The clip-zero cell as text: ``12.34`` (robust), ``12.34*`` (clean) or ``-``."""
    return cell_text(clip_zero_cell(result, eps))


def markdown_table(results: Mapping[str, ModelResult], title: str = "") -> str:
    """Table 1 (one table per group) and the zero-shot table of ``results``, as Markdown."""
    tables = [*build_table1(results, protocols=False), build_zero_shot(results)]
    return (f"**{title}**\n\n" if title else "") + "\n".join(render(t) for t in tables if t is not None)


def attack_gap_table(results: Mapping[str, ModelResult], upto: str = "pgd") -> str:
    """:func:`~mmt_ard.evaluation.tables.build_attack_gap` as Markdown (no title); empty when it has no rows."""
    table = build_attack_gap(results, upto)
    return render(table, title=False) if table is not None else ""


def sanity_markdown(results: Mapping[str, ModelResult]) -> str:
    """:func:`~mmt_ard.evaluation.tables.build_sanity` under a ``## Sanity checks`` heading; empty without checks."""
    table = build_sanity(results)
    return "\n## Sanity checks\n\n" + render(table, title=False) if table is not None else ""


__all__ = ["attack_gap_table", "clip_zero", "markdown_table", "sanity_markdown"]
