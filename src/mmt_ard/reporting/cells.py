"""Experiment tables (dicts of an experiment's ``results.json``) as Markdown, in the one cell format of
:mod:`mmt_ard.tables`."""

from __future__ import annotations

from typing import Any

from mmt_ard.tables import Table, cell_text, markdown_table

__all__ = ["cell_text", "table_markdown"]


def table_markdown(table: dict[str, Any]) -> str:
    """The pipe table (no title, no notes) of a stored experiment table."""
    plain = Table.from_dict({**table, "notes": []})
    return markdown_table(plain, title=False).rstrip("\n")
