"""Reports over result folders: one self-contained ``report.html`` and a ``report.md``.

Each run leads with the answer: a headline sentence per student, then the figures (robust accuracy
against eps per student, the radar charts, the training curves), then the tables, one per student.

``write_report(run_dirs, output, title)`` is the one report writer (``mmt-ard report RUN_DIR...``
and ``mmt-ard demo``'s page); :mod:`~mmt_ard.reporting.gather` reads and checks folders,
:mod:`~mmt_ard.reporting.evaluation_runs` converts demo / evaluate results, with
:mod:`~mmt_ard.reporting.demo_runs` adding what a demo folder holds besides (the :class:`DemoFacts`
the demo records in ``demo-run.json``, ``protocol-gap.json``); :mod:`~mmt_ard.reporting.headline`
reads each student's numbers back from its table and words the headline,
:mod:`~mmt_ard.reporting.figures` draws the eps figure and the radar charts, and
:mod:`~mmt_ard.reporting.html` / :mod:`~mmt_ard.reporting.markdown` render the pages.
"""

from mmt_ard.reporting.demo_runs import DemoFacts
from mmt_ard.reporting.gather import load_run, load_runs
from mmt_ard.reporting.model import Figure, Headline, Image, Point, Radar, Run, Section, Student, Table, format_cell
from mmt_ard.reporting.writer import default_output, write_report

__all__ = [
    "DemoFacts",
    "Figure",
    "Headline",
    "Image",
    "Point",
    "Radar",
    "Run",
    "Section",
    "Student",
    "Table",
    "default_output",
    "format_cell",
    "load_run",
    "load_runs",
    "write_report",
]
