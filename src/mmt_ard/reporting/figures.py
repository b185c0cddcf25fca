"""Images for the report drawn with matplotlib (robust accuracy against eps per student, the Figure-1
radar chart) and figure files read back.

Drawing uses a :class:`matplotlib.figure.Figure` on the Agg canvas directly (no pyplot), so no
global plotting state is touched and no display is needed.
"""

from __future__ import annotations

import io
import math
from typing import Any

from mmt_ard.errors import UserError
from mmt_ard.reporting.model import Figure, Image, Point, Radar, Student

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}
SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff", "image/gif": b"GIF8"}
RADAR_SIZE = 5.0  # inches; at 100 dpi a 500 px square before tight cropping
PANEL_SIZE = (3.9, 3.0)  # inches per student panel of the eps figure; three panels make 1170 px at 100 dpi
PANELS_PER_ROW = 3
EPS_TITLE = "Robust accuracy against eps"
LINE_STYLES = {  # the methods users compare, always drawn alike; any other method gets the next colour
    "original": {"color": "#8c8c8c", "linestyle": "--", "marker": "s"},
    "baseline": {"color": "#1f77b4", "linestyle": "-", "marker": "o"},
    "mmt-ard": {"color": "#d62728", "linestyle": "-", "marker": "D"},
}


def eps_value(eps: str) -> float:
    """The x position of an eps key: ``2/255`` -> 2.0 (in units of 1/255); a plain number times 255."""
    num, _, den = eps.partition("/")
    try:
        return float(num) * 255 / float(den) if den else float(num) * 255
    except ValueError:
        return math.nan


def eps_png(students: list[Student], dpi: int = 100) -> bytes:
    """Robust accuracy against eps, one panel per student, one line per method (original, baseline,
    MMT-ARD first); eps 0 is the clean accuracy. Error bars (± std) where a point is a mean over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    cols = min(len(students), PANELS_PER_ROW)
    rows = math.ceil(len(students) / cols)
    fig = MplFigure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    extra = iter(f"C{i}" for i in range(2, 10))
    colours: dict[str, str] = {}
    for ax, student in zip(axes.flat, students):
        x = {e: eps_value(e) for e in student.eps()}
        if all(math.isfinite(v) for v in x.values()):
            x = dict(sorted(x.items(), key=lambda item: item[1]))
        else:  # an eps key that is not a number: in the order measured, evenly spaced
            x = {e: float(i) for i, e in enumerate(x, 1)}
        eps = list(x)
        for method in sorted(student.racc, key=_method_order):
            style = LINE_STYLES.get(method) or {"color": colours.setdefault(method, next(extra, "k")), "marker": "^"}
            points = [(0.0, student.acc[method])] if method in student.acc else []
            points += [(x[e], student.racc[method][e]) for e in eps if e in student.racc[method]]
            xs, ys = [x for x, _ in points], [p.mean for _, p in points]
            errors = [_error(p) for _, p in points]
            ax.errorbar(xs, ys, yerr=errors if any(errors) else None, capsize=3, linewidth=1.6, label=method, **style)
        ax.set_title(_wrap(student.name), fontsize=10)
        ax.set_xticks([0.0, *x.values()], ["clean", *x], fontsize=8)
        ax.set_xlabel("eps", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)", fontsize=9)
    for ax in list(axes.flat)[len(students) :]:
        ax.set_visible(False)
    handles, labels = _legend(axes)
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(EPS_TITLE + (" (mean ± std over seeds)" if _has_seeds(students) else ""), fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def eps_image(students: list[Student], file_name: str) -> Image:
    """:func:`eps_png` as an :class:`Image` titled after the students it shows."""
    title = f"{EPS_TITLE}: {', '.join(s.name for s in students)} (eps 0 = clean accuracy)"
    return Image(file_name=file_name, title=title, data=eps_png(students), mime="image/png", wide=True)


def _method_order(method: str) -> tuple[int, str]:
    order = list(LINE_STYLES)
    return (order.index(method), "") if method in order else (len(order), method)


def _error(p: Point) -> float:
    return p.std if p.std is not None and p.n > 1 else 0.0


def _has_seeds(students: list[Student]) -> bool:
    return any(p.n > 1 for s in students for by_eps in s.racc.values() for p in by_eps.values())


def _legend(axes: Any) -> tuple[list[Any], list[str]]:
    """Every method once, in drawing order, over all panels (``axes``: the array ``subplots`` returns)."""
    seen: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    return list(seen.values()), list(seen)


def _wrap(text: str, width: int = 34) -> str:
    """A long student name over several lines, so a panel title never runs into the next panel."""
    return "\n".join(text[i : i + width] for i in range(0, len(text), width)) or text


def radar_png(radar: Radar, dpi: int = 100) -> bytes:
    """The radar as PNG bytes: one filled polygon per series, each axis scaled to its largest value.

    The axes measure different things (sum-acc is about acc + racc), so a shared radius would squash
    the small ones; each axis runs from 0 to its own maximum and the tick label gives the raw values.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    n = len(radar.axes)
    angles = [2 * math.pi * i / n for i in range(n)]
    peaks = [max((max(v[i], 0.0) for v in radar.series.values()), default=0.0) or 1.0 for i in range(n)]
    fig = MplFigure(figsize=(RADAR_SIZE, RADAR_SIZE))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(projection="polar")
    ax.set_theta_offset(math.pi / 2)  # first axis at the top, then clockwise
    ax.set_theta_direction(-1)
    for name, values in radar.series.items():
        radii = [max(v, 0.0) / peak for v, peak in zip(values, peaks)]
        colour = LINE_STYLES.get(name, {}).get("color")  # the eps figure's colour for the same method
        ax.plot(angles + angles[:1], radii + radii[:1], marker="o", linewidth=1.5, label=name, color=colour)
        ax.fill(angles + angles[:1], radii + radii[:1], alpha=0.15, color=colour)
    labels = [
        f"{axis}\n" + " / ".join(f"{v[i]:.1f}" for v in radar.series.values()) for i, axis in enumerate(radar.axes)
    ]
    ax.set_xticks(angles)
    ax.set_xticklabels(labels, fontsize=9)
    ax.tick_params(axis="x", pad=14)  # keep the labels off the polygons
    ax.set_ylim(0.0, 1.1)
    ax.set_yticks([0.25, 0.5, 0.75, 1.0])
    ax.set_yticklabels([])
    ax.grid(alpha=0.4)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(radar.series), fontsize=9, frameon=False)
    subtitle = f"values: {' / '.join(radar.series)}; each axis scaled to its maximum"
    ax.set_title(f"{radar.label()}\n{subtitle}", fontsize=9, pad=36)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def radar_image(radar: Radar, file_name: str) -> Image:
    """:func:`radar_png` wrapped as an :class:`Image` titled like the chart."""
    return Image(file_name=file_name, title=radar.label(), data=radar_png(radar), mime="image/png")


def figure_image(figure: Figure, file_name: str) -> Image:
    """A run's figure file read back, checked to be the image type its name says."""
    mime = IMAGE_TYPES.get(figure.path.suffix.lower())
    if mime is None:
        raise UserError(
            f"figure {figure.id!r}: {str(figure.path)!r} is not an image type a report can embed; "
            f"save it as one of {', '.join(IMAGE_TYPES)}"
        )
    try:
        data = figure.path.read_bytes()
    except OSError as e:
        raise UserError(
            f"figure {figure.id!r}: cannot read {str(figure.path)!r} ({e.strerror}); regenerate the figure"
        ) from e
    signature = SIGNATURES.get(mime)
    if not data or (signature and not data.startswith(signature)):
        raise UserError(
            f"figure {figure.id!r}: {str(figure.path)!r} is empty or not a {mime} file "
            "(truncated or mislabelled); regenerate the figure"
        )
    return Image(file_name=file_name, title=figure.title, data=data, mime=mime)
