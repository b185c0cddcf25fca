"""Table cells and tables of an experiment's ``results.json`` as text (Markdown): the one cell format of
``tables.md`` and of ``mmt-ard report``."""

from __future__ import annotations

import math
from typing import Any


def cell_text(cell: Any) -> str:
    """A cell: ``None`` -> ``-``, a float with 2 decimals, ``{"mean", "std", "n", "mark"}`` -> ``m ± s`` + mark
    (the mean alone for one seed). The one cell format of tables.md and of ``mmt-ard report``."""
    if cell is None:
        return "-"
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


def table_markdown(table: dict[str, Any]) -> str:
    head = "| " + " | ".join(table["columns"]) + " |"
    rule = "|" + "---|" * len(table["columns"])
    rows = ["| " + " | ".join(cell_text(c) for c in row) + " |" for row in table["rows"]]
    return "\n".join([head, rule, *rows])
