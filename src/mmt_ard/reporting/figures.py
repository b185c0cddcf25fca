"""Images for the report: the Figure-1 radar chart drawn with matplotlib, and figure files read back.

Drawing uses a :class:`matplotlib.figure.Figure` on the Agg canvas directly (no pyplot), so no
global plotting state is touched and no display is needed.
"""

from __future__ import annotations

import io
import math

from mmt_ard.errors import UserError
from mmt_ard.reporting.model import Figure, Image, Radar

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
}
SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff", "image/gif": b"GIF8"}
RADAR_SIZE = 5.0  # inches; at 100 dpi a 500 px square before tight cropping


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
        ax.plot(angles + angles[:1], radii + radii[:1], marker="o", linewidth=1.5, label=name)
        ax.fill(angles + angles[:1], radii + radii[:1], alpha=0.15)
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
