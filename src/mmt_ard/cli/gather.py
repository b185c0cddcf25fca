"""``mmt-ard report RUN_DIR...``: one HTML page and one Markdown file over result folders.

RUN_DIRs are folders written by ``mmt-ard demo``, ``mmt-ard evaluate`` or an experiment run
(``results.json`` with ``"kind": "mmt-ard-experiment"``). The report goes to ``--output``, by default
``report/`` inside the first RUN_DIR, so it sits beside the numbers without replacing the run's own
``report.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmt_ard.reporting import default_output, write_report


def add_report_args(p: argparse.ArgumentParser) -> None:
    """The ``report`` subcommand's arguments: RUN_DIR..., ``--output``, ``--title``."""
    p.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN_DIR",
        help="result folders (demo, evaluate or experiment output), shown in this order",
    )
    p.add_argument(
        "--output",
        type=Path,
        help="folder for report.html, report.md and figure PNGs (default: RUN_DIR/report of the first RUN_DIR)",
    )
    p.add_argument("--title", help="page title (default: the run's title, or 'MMT-ARD report' for several)")


def run_report(args: argparse.Namespace) -> int:
    """Write the report; print where it went. Bad folders raise UserError (exit code 2 in ``main``)."""
    output = args.output if args.output is not None else default_output(args.run_dirs)
    html = write_report(args.run_dirs, output, args.title)
    print(f"wrote {html} and {html.with_name('report.md')}")
    return 0
