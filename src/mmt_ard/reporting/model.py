"""What a report is made of: runs, their tables, figures and radar charts, and how a cell reads.

:mod:`mmt_ard.reporting.gather` fills these from result folders; :mod:`~mmt_ard.reporting.html` and
:mod:`~mmt_ard.reporting.markdown` render them. Nothing here touches the file system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmt_ard.tables import EMPTY, Cell, Table, cell_detail, cell_text

__all__ = ["EMPTY", "Cell", "Figure", "Image", "Radar", "Run", "Section", "Table", "cell_detail", "format_cell", "slug"]


@dataclass
class Figure:
    """An image file a run folder already holds (e.g. ``curves.png``)."""

    id: str
    title: str
    path: Path


@dataclass
class Radar:
    """The paper's Figure-1 radar for one student: one polygon per series over the same axes."""

    student: str
    axes: list[str]
    series: dict[str, list[float]]
    title: str = ""

    def label(self) -> str:
        """The title, or ``student: a vs b`` when none was given."""
        return self.title or f"{self.student}: {' vs '.join(self.series)}"


@dataclass
class Run:
    """Everything a report shows about one result folder."""

    folder: Path
    title: str
    kind: str  # "experiment" (results.json with kind mmt-ard-experiment) or "evaluation" (demo / evaluate)
    meta: dict[str, str] = field(default_factory=dict)  # short facts shown under the heading
    summary: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    radars: list[Radar] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)


@dataclass
class Image:
    """A figure ready to embed (HTML) and to write beside ``report.md`` as ``file_name``."""

    file_name: str
    title: str
    data: bytes
    mime: str


@dataclass
class Section:
    """A run with its images, in the order they are shown (the run's figures, then its radars)."""

    run: Run
    anchor: str
    images: list[Image]


format_cell = cell_text  # the one cell format (mmt_ard.tables)


def slug(text: str) -> str:
    """A file- and anchor-safe name: lowercase letters, digits and dashes."""
    out = "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in out.split("-") if part) or "run"
