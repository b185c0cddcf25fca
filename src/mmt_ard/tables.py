"""A results table as data, and its one Markdown rendering.

Every table the tool shows (Table 1, the attack gap, the sanity checks, the experiment tables) is
built once as a :class:`Table` by the module that owns its numbers; ``results.md``, the demo's
``report.md`` and ``mmt-ard report``'s Markdown and HTML pages all render that same object. Nothing
here knows about evaluation or experiments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EMPTY", "Cell", "Table", "cell_detail", "cell_text", "inline", "markdown_lines", "markdown_table"]

# A table cell as results.json writes it: text, a number, null, or {"mean", "std", "n", "mark"}.
Cell = str | int | float | dict[str, Any] | None

EMPTY = "-"  # how a null cell reads


@dataclass
class Table:
    """One results table: ``rows`` are lists of :data:`Cell`, one per column; ``notes`` explain marks."""

    id: str
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Table:
        """A table as an experiment's ``results.json`` stores it (``id``, ``title``, ``columns``, ``rows``, ``notes``)."""
        return cls(
            id=str(data.get("id", "")),
            title=str(data.get("title", "")),
            columns=[str(c) for c in data["columns"]],
            rows=[list(r) for r in data["rows"]],
            notes=[str(n) for n in data.get("notes", [])],
        )


def cell_text(cell: Any) -> str:
    """A cell: ``None`` -> ``-``, a float with 2 decimals, ``{"mean", "std", "n", "mark"}`` -> ``m ± s`` + mark
    (the mean alone for one seed). The one cell format of every table."""
    if cell is None:
        return EMPTY
    if isinstance(cell, dict):
        text = f"{float(cell['mean']):.2f}"
        if cell.get("std") is not None and cell.get("n") != 1:  # one seed has no spread to show
            text += f" ± {float(cell['std']):.2f}"
        return text + (f" {cell['mark']}" if cell.get("mark") else "")
    if isinstance(cell, bool):
        return str(cell).lower()
    if isinstance(cell, float):
        return "nan" if math.isnan(cell) else f"{cell:.2f}"
    return str(cell)


def cell_detail(cell: Cell) -> str:
    """A hover text for a statistic (``n = 3 seeds``); empty for other cells."""
    if isinstance(cell, dict) and cell.get("n") is not None:
        return f"n = {cell['n']}"
    return ""


def inline(text: str) -> str:
    """Text safe inside a Markdown table cell or a link: no pipes, no line breaks."""
    return text.replace("|", "\\|").replace("\n", " ")


def _paragraph(text: str) -> str:
    """Free text as a paragraph: a leading ``*``, ``-``, ``+`` or ``#`` would start a list or heading."""
    return "\\" + text if text and text[0] in "*-+#" else text


def markdown_lines(table: Table, title: bool = True) -> list[str]:
    """Title in bold (unless ``title=False``), a pipe table, the notes below, a blank line after each part."""
    lines = [f"**{inline(table.title)}**", ""] if title and table.title else []
    lines += [
        "| " + " | ".join(inline(c) for c in table.columns) + " |",
        "|" + "---|" * len(table.columns),
    ]
    lines += ["| " + " | ".join(inline(cell_text(c)) for c in row) + " |" for row in table.rows]
    lines.append("")
    for note in table.notes:
        lines += [_paragraph(note), ""]
    return lines


def markdown_table(table: Table, title: bool = True) -> str:
    """:func:`markdown_lines` as one string."""
    return "\n".join(markdown_lines(table, title))
