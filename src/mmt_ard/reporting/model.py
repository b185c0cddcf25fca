"""What a report is made of: runs, their tables, figures and radar charts, and how a cell reads.

:mod:`mmt_ard.reporting.gather` fills these from result folders; :mod:`~mmt_ard.reporting.html` and
:mod:`~mmt_ard.reporting.markdown` render them. Nothing here touches the file system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmt_ard.tables import EMPTY, Cell, Table, cell_detail, cell_text

__all__ = [
    "EMPTY",
    "Cell",
    "Figure",
    "Headline",
    "Image",
    "Point",
    "Radar",
    "Run",
    "Section",
    "Student",
    "Table",
    "cell_detail",
    "format_cell",
    "slug",
]


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


@dataclass(frozen=True)
class Point:
    """One accuracy in percent: a mean over ``n`` seeds with its spread, and whether the table marked
    its paired difference to the baseline significant."""

    mean: float
    std: float | None = None
    n: int = 1
    significant: bool = False


@dataclass
class Student:
    """One student's Table-1 numbers by method (``original``, ``baseline``, ``mmt-ard``, ...).

    ``acc`` is the clean accuracy per method, ``racc`` the robust accuracy per method and eps key
    (``2/255``); ``table_id`` names the table they were read from.
    """

    name: str
    table_id: str
    acc: dict[str, Point] = field(default_factory=dict)
    racc: dict[str, dict[str, Point]] = field(default_factory=dict)

    def eps(self) -> list[str]:
        """Every eps any method was measured at, in first-seen order."""
        return list(dict.fromkeys(e for by_eps in self.racc.values() for e in by_eps))


@dataclass(frozen=True)
class Headline:
    """The answer for one student in one sentence (``text`` follows ``student: ``)."""

    student: str
    text: str


@dataclass
class Run:
    """Everything a report shows about one result folder."""

    folder: Path
    title: str
    kind: str  # "experiment" (results.json with kind mmt-ard-experiment) or "evaluation" (demo / evaluate)
    meta: dict[str, str] = field(default_factory=dict)  # short facts shown under the heading
    summary: list[str] = field(default_factory=list)
    intro: list[str] = field(default_factory=list)  # paragraphs on what the numbers are, after the findings
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    radars: list[Radar] = field(default_factory=list)
    provenance: list[str] = field(default_factory=list)  # paragraphs after the tables: machine, code, files
    environment: dict[str, Any] = field(default_factory=dict)
    students: list[Student] = field(default_factory=list)  # read from the tables (reporting.headline)
    headlines: list[Headline] = field(default_factory=list)  # one per student, shown first


@dataclass
class Image:
    """A figure ready to embed (HTML) and to write beside ``report.md`` as ``file_name``."""

    file_name: str
    title: str
    data: bytes
    mime: str
    wide: bool = False  # shown on a row of its own (the eps figure, one panel per student)


@dataclass
class Section:
    """A run with its images, in the order they are shown: robust accuracy against eps, the radars,
    then the run's own figures (training curves)."""

    run: Run
    anchor: str
    images: list[Image]


format_cell = cell_text  # the one cell format (mmt_ard.tables)


def slug(text: str) -> str:
    """A file- and anchor-safe name: lowercase letters, digits and dashes."""
    out = "".join(c if c.isascii() and c.isalnum() else "-" for c in text.lower())
    return "-".join(part for part in out.split("-") if part) or "run"
