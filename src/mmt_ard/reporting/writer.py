"""Write ``report.html`` and ``report.md`` (plus the figures the Markdown links to) for result folders.

Everything is read, checked and rendered in memory first; only then are files written, each
atomically (:mod:`mmt_ard.io`). Bad input therefore raises :class:`~mmt_ard.errors.UserError` before
anything in the output folder changes, and an interrupted write leaves the previous report whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from mmt_ard.errors import UserError
from mmt_ard.io import atomic_write_bytes, atomic_write_text
from mmt_ard.reporting.figures import eps_image, figure_image, radar_image
from mmt_ard.reporting.gather import load_runs
from mmt_ard.reporting.html import render_html
from mmt_ard.reporting.markdown import render_markdown
from mmt_ard.reporting.model import Image, Run, Section, slug

log = logging.getLogger(__name__)

HTML = "report.html"
MARKDOWN = "report.md"
DEFAULT_SUBFOLDER = "report"  # default output: RUN_DIR/report of the first folder


def default_output(run_dirs: Sequence[str | Path]) -> Path:
    """``report/`` inside the first folder: beside the numbers it shows, clear of the run's own files."""
    if not run_dirs:
        raise UserError("no result folders given; pass one or more RUN_DIRs")
    return Path(run_dirs[0]) / DEFAULT_SUBFOLDER


def write_report(
    run_dirs: Sequence[str | Path],
    output: str | Path | None = None,
    title: str | None = None,
    markdown_copy: str | Path | None = None,
) -> Path:
    """Read every folder in ``run_dirs``, write the report into ``output``; the path of ``report.html``.

    ``output`` defaults to :func:`default_output`; ``title`` to the run's own title (one folder) or
    "MMT-ARD report". ``report.md`` and the PNG/figure files it references land beside the HTML page.
    ``markdown_copy``: a file to hold the same Markdown as well, its image links pointing into ``output``
    (``mmt-ard demo`` keeps one as ``OUTPUT/report.md``).
    """
    runs = load_runs(run_dirs)
    out = Path(output) if output is not None else default_output(run_dirs)
    check_output(out, runs)
    sections = build_sections(runs)
    title = title or (runs[0].title if len(runs) == 1 else "MMT-ARD report")
    sources = [str(r.folder) for r in runs]
    page = render_html(title, sections, sources)
    text = render_markdown(title, sections, sources)
    copies = {out / MARKDOWN: text}
    if markdown_copy is not None:
        copy = Path(markdown_copy)
        if copy.is_dir():
            raise UserError(f"the Markdown copy {str(copy)!r} is a folder; pass a file name such as report.md")
        copies[copy] = render_markdown(title, sections, sources, image_dir(out, copy))
    for section in sections:
        for image in section.images:
            atomic_write_bytes(out / image.file_name, image.data)
    for path, markdown in copies.items():
        atomic_write_text(path, markdown)
    html_path = atomic_write_text(out / HTML, page)
    log.info(
        "wrote %s and %s (%d tables, %d figures)",
        html_path,
        out / MARKDOWN,
        sum(len(r.tables) for r in runs),
        sum(len(s.images) for s in sections),
    )
    return html_path


def image_dir(out: Path, markdown: Path) -> str:
    """How Markdown at ``markdown`` reaches the images in ``out``: ``""`` beside them, else ``report/``."""
    rel = Path(os.path.relpath(out.resolve(), markdown.parent.resolve())).as_posix()
    return "" if rel == "." else rel + "/"


def check_output(out: Path, runs: list[Run]) -> None:
    """The output must be a folder (or new) and not a result folder itself, whose report.md it would replace."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--output {str(out)!r} is a file; pass a folder (it is created if missing)")
    for run in runs:
        if out.resolve() == run.folder.resolve():
            raise UserError(
                f"--output {str(out)!r} is the result folder itself and would overwrite its files; "
                f"pass another folder, e.g. {str(out / DEFAULT_SUBFOLDER)!r}"
            )


def build_sections(runs: list[Run]) -> list[Section]:
    """Each run with a unique anchor and its images rendered, in the order a reader wants them: robust
    accuracy against eps for every student, one radar per student, then the run's own figures."""
    anchors: set[str] = set()
    sections = []
    for run in runs:
        anchor = _unique(slug(run.folder.resolve().name), anchors)
        names: set[str] = set()
        images: list[Image] = []
        if run.students:
            images.append(eps_image(run.students, _unique(f"{anchor}-racc-vs-eps", names) + ".png"))
        for radar in run.radars:
            images.append(radar_image(radar, _unique(f"{anchor}-radar-{slug(radar.student)}", names) + ".png"))
        for fig in run.figures:
            name = _unique(f"{anchor}-{slug(fig.id)}", names) + fig.path.suffix.lower()
            images.append(figure_image(fig, name))
        sections.append(Section(run=run, anchor=anchor, images=images))
    return sections


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... whichever is free; marks it taken."""
    candidate, i = name, 1
    while candidate in taken:
        i += 1
        candidate = f"{name}-{i}"
    taken.add(candidate)
    return candidate
