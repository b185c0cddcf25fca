"""Reports over result folders: one self-contained ``report.html`` and a ``report.md``.

``write_report(run_dirs, output, title)`` is the entry point (``mmt-ard report RUN_DIR...``);
:mod:`~mmt_ard.reporting.gather` reads and checks folders, :mod:`~mmt_ard.reporting.evaluation_runs`
converts demo / evaluate results, :mod:`~mmt_ard.reporting.figures` draws the radar charts, and
:mod:`~mmt_ard.reporting.html` / :mod:`~mmt_ard.reporting.markdown` render the pages.
"""

from mmt_ard.reporting.gather import load_run, load_runs
from mmt_ard.reporting.model import Figure, Image, Radar, Run, Section, Table, format_cell
from mmt_ard.reporting.writer import default_output, write_report

__all__ = [
    "Figure",
    "Image",
    "Radar",
    "Run",
    "Section",
    "Table",
    "default_output",
    "format_cell",
    "load_run",
    "load_runs",
    "write_report",
]
