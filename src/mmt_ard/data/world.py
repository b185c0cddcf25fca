"""The shapes world: a deterministic, procedurally generated image-text data set shipped as code.

Every image shows one coloured shape (8 shapes x 6 colours, filled or outline, small or large,
anywhere in the frame) over a textured, noisy background with a few small coloured specks as
clutter. Shapes are drawn from signed distance functions (SDFs) at 32x32 with analytic
anti-aliasing (coverage ramps over one pixel across the edge: the look of 2x supersampling at a
quarter of the cost); everything is vectorized torch on the CPU, 20000 images in a few seconds.

Tasks (see :data:`TASKS`):

* ``shapes``   -- 24 (colour, shape) classes with ``(colour + shape) % 2 == 0``, filled.
* ``combos``   -- the other 24 (colour, shape) pairs, filled: zero-shot on unseen combinations.
* ``outlines`` -- 8 shape classes drawn as outlines in any colour: zero-shot on a new style.
* ``captions`` -- all 48 pairs in both styles, each with a short caption, for CLIP pretraining.

The same ``(task, split, n, seed)`` always gives the same tensors: seeds come from ``zlib.crc32``
of the names, never from ``hash()``, and images are made in fixed-size chunks, each with its own
seeded ``torch.Generator``, so the first ``k`` images of a split do not depend on ``n``.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
import zlib
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F

from mmt_ard.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SIZE = 32
_OUTLINE = 0.06  # half-width of outline strokes in normalized units (~2 px wide strokes)
_CHUNK = 480  # images per generator; a multiple of 24 and 48 so chunks are class-balanced

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "diamond", "cross", "ring", "star", "hexagon",
)  # fmt: skip
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
STYLES: tuple[str, ...] = ("filled", "outline")
SIZES: tuple[str, ...] = ("small", "large")

_RGB = torch.tensor(
    [
        [0.85, 0.15, 0.15],  # red
        [0.15, 0.70, 0.20],  # green
        [0.15, 0.30, 0.90],  # blue
        [0.95, 0.85, 0.15],  # yellow
        [0.60, 0.20, 0.75],  # purple
        [0.95, 0.55, 0.10],  # orange
    ]
)
# Radius ranges in normalized units (the image spans [-1, 1]): ~4-5 px and ~6-9 px at 32x32.
_RADIUS = ((0.25, 0.34), (0.40, 0.56))
# Rotation range per shape: squares and diamonds only wobble so they stay distinguishable.
_MAX_ANGLE = (0.0, 0.35, math.pi, 0.35, math.pi, 0.0, math.pi, math.pi)

SHAPE_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a rendering of a {}.",
    "a picture of a small or large {}.",
    "a drawing of a {}.",
    "a {} on a noisy background.",
    "an image of a {}.",
)
OUTLINE_TEMPLATES: tuple[str, ...] = (
    "an outline of a {}.",
    "a line drawing of a {}.",
    "a hollow {}.",
    "the outline of a {} shape.",
    "a {} drawn with a thin line.",
)


_PLACE = {
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
_PHRASINGS = (  # (filled phrasings, outline phrasings); ``a`` is fixed to ``an`` afterwards
    (
        "a {size} {color} {shape} {place}, filled, on a {bg} background",
        "a filled {size} {color} {shape} {place}",
        "a photo of a {color} {shape}, {size}, {place}",
        "a solid {color} {shape} {place} on a {bg} background",
    ),
    (
        "an outline of a {size} {color} {shape} {place}",
        "a {size} {color} {shape} {place}, outline, on a {bg} background",
        "a line drawing of a {color} {shape}, {size}, {place}",
        "a hollow {color} {shape} {place} on a {bg} background",
    ),
)


_ANY = -1  # in a class table: this attribute is drawn at random per image


@dataclass(frozen=True)
class TaskInfo:
    """A built-in task: its classes, prompt templates and splits with their default sizes.

    ``classes`` holds one ``(colour, shape)`` index pair per class; a colour of ``_ANY`` means
    any colour. ``style`` is an index into :data:`STYLES`, or ``_ANY`` for both styles.
    """

    name: str
    description: str
    classes: tuple[tuple[int, int], ...]
    style: int
    templates: tuple[str, ...]
    splits: MappingProxyType[str, int]
    captioned: bool = False

    @property
    def classnames(self) -> tuple[str, ...]:
        """Names: 'red circle' for a (colour, shape) class, 'circle' where any colour goes."""
        return tuple(SHAPES[s] if c == _ANY else f"{COLORS[c]} {SHAPES[s]}" for c, s in self.classes)


def _pairs(parity: int | None) -> tuple[tuple[int, int], ...]:
    """(colour, shape) index pairs, optionally only those with ``(c + s) % 2 == parity``."""
    return tuple(
        (c, s) for c in range(len(COLORS)) for s in range(len(SHAPES)) if parity is None or (c + s) % 2 == parity
    )


TASKS: MappingProxyType[str, TaskInfo] = MappingProxyType(
    {
        "shapes": TaskInfo(
            "shapes",
            "24 filled (colour, shape) classes; the main classification task",
            _pairs(0),
            0,
            SHAPE_TEMPLATES,
            MappingProxyType({"train": 12000, "val": 1000, "test": 1000}),
        ),
        "combos": TaskInfo(
            "combos",
            "the other 24 (colour, shape) pairs, filled; zero-shot on unseen combinations",
            _pairs(1),
            0,
            SHAPE_TEMPLATES,
            MappingProxyType({"test": 1000, "val": 1000}),
        ),
        "outlines": TaskInfo(
            "outlines",
            "8 shapes drawn as outlines in any colour; zero-shot on a new style",
            tuple((_ANY, s) for s in range(len(SHAPES))),
            1,
            OUTLINE_TEMPLATES,
            MappingProxyType({"test": 1000, "val": 1000}),
        ),
        "captions": TaskInfo(
            "captions",
            "all 48 (colour, shape) pairs in both styles with short captions; for pretraining",
            _pairs(None),
            _ANY,
            SHAPE_TEMPLATES,
            MappingProxyType({"train": 20000, "val": 1000}),
            captioned=True,
        ),
    }
)


@dataclass(frozen=True)
class WorldSplit:
    """One generated split. Treat the tensors as read-only: they are shared with the cache.

    ``labels`` index the task's classnames (for ``captions``: the 48 (colour, shape) pairs).
    ``attributes`` holds per-image ``color``, ``shape``, ``size``, ``style`` indices and the
    centre ``cx``, ``cy`` in [-1, 1] (y grows downwards).
    """

    task: str
    split: str
    seed: int
    images: torch.Tensor  # (N, 3, 32, 32) uint8
    labels: torch.Tensor  # (N,) int64
    captions: tuple[str, ...] | None
    attributes: MappingProxyType[str, torch.Tensor]


def task_info(task: str) -> TaskInfo:
    """The :class:`TaskInfo` of ``task``; a :class:`UserError` listing the tasks otherwise."""
    if task not in TASKS:
        raise UserError(f"unknown built-in task {task!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[task]


def generate(task: str, split: str, n: int | None = None, seed: int = 0) -> WorldSplit:
    """Generate (or fetch from a small in-process cache) ``n`` images of ``task``/``split``.

    ``n`` defaults to the split's size in :data:`TASKS`. Bit-identical for equal arguments.
    """
    info = task_info(task)
    if split not in info.splits:
        raise UserError(f"task {task!r} has no split {split!r}; choose one of: {', '.join(info.splits)}")
    n = info.splits[split] if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise UserError(f"number of images n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"seed must be an integer, got {seed!r}")
    return _generate_cached(task, split, n, seed)


def clear_cache() -> None:
    """Forget cached splits (tests use it to check that regeneration is bit-identical)."""
    _generate_cached.cache_clear()


@functools.lru_cache(maxsize=4)
def _generate_cached(task: str, split: str, n: int, seed: int) -> WorldSplit:
    start = time.perf_counter()
    info = TASKS[task]
    base = zlib.crc32(f"mmt_ard.world/{task}/{split}/{seed}".encode())
    images = torch.empty(n, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    labels, chunks = [], []
    for k, first in enumerate(range(0, n, _CHUNK)):
        count = min(_CHUNK, n - first)
        chunk_images, chunk_labels, chunk_attrs = _chunk(info, base, k)
        images[first : first + count] = chunk_images[:count]
        labels.append(chunk_labels[:count])
        chunks.append({key: value[:count] for key, value in chunk_attrs.items()})
    attrs = {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}
    captions = _captions(attrs) if info.captioned else None
    log.debug("generated %s/%s n=%d in %.2fs", task, split, n, time.perf_counter() - start)
    labels_all = torch.cat(labels)
    return WorldSplit(task, split, seed, images, labels_all, captions, MappingProxyType(attrs))


def _chunk(info: TaskInfo, base: int, index: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Images, labels and attributes of chunk ``index``.

    Every chunk has its own generator and is always made whole (the last one is cut by the
    caller), so the first ``k`` images of a split are the same whatever ``n`` is.
    """
    g = torch.Generator().manual_seed(zlib.crc32(f"{base}/{index}".encode()))
    labels, attrs = _sample_attributes(info, _CHUNK, g)
    return _render(attrs, g), labels, attrs


def _uniform(g: torch.Generator, n: int, low: float | torch.Tensor, high: float | torch.Tensor) -> torch.Tensor:
    """``n`` draws, uniform in [low, high) (bounds may be per-draw tensors)."""
    return low + (high - low) * torch.rand(n, generator=g)


def _sample_attributes(info: TaskInfo, count: int, g: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Class-balanced labels and the discrete and continuous attributes of ``count`` images."""
    classes = torch.tensor(info.classes)  # (C, 2)
    labels = (torch.arange(count) % len(classes))[torch.randperm(count, generator=g)]
    color, shape = classes[labels, 0], classes[labels, 1]
    color = torch.where(color == _ANY, torch.randint(len(COLORS), (count,), generator=g), color)
    style = torch.full((count,), info.style)
    if info.style == _ANY:
        style = torch.randint(len(STYLES), (count,), generator=g)
    size = torch.randint(len(SIZES), (count,), generator=g)
    bounds = torch.tensor(_RADIUS)[size]  # (B, 2)
    radius = _uniform(g, count, bounds[:, 0], bounds[:, 1])
    reach = 0.97 - radius  # keep the shape inside the frame
    attrs = {
        "color": color,
        "shape": shape,
        "size": size,
        "style": style,
        "radius": radius,
        "cx": _uniform(g, count, -reach, reach),
        "cy": _uniform(g, count, -reach, reach),
        "angle": _uniform(g, count, -1.0, 1.0) * torch.tensor(_MAX_ANGLE)[shape],
        "dark": torch.randint(2, (count,), generator=g),
        "phrasing": torch.randint(len(_PHRASINGS[0]), (count,), generator=g),
    }
    return labels, attrs


def _axes(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates in [-1, 1] as a row (1, 1, size) and a column (1, size, 1)."""
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    return axis.view(1, 1, size), axis.view(1, size, 1)


def _polygon(x: torch.Tensor, y: torch.Tensor, sides: int, circumradius: float) -> torch.Tensor:
    """SDF of a regular polygon (exact inside, close enough outside)."""
    apothem = circumradius * math.cos(math.pi / sides)
    normals = [2 * math.pi * (k + 0.5) / sides - math.pi / 2 for k in range(sides)]
    faces = torch.stack([x * math.cos(a) + y * math.sin(a) for a in normals])
    return faces.amax(0) - apothem


def _unit_sdf(shape: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Signed distance to ``SHAPES[shape]`` of radius ~1, in local (rotated, scaled) coords."""
    name = SHAPES[shape]
    if name in ("circle", "ring", "star"):
        rho = torch.sqrt(x * x + y * y)
        if name == "circle":
            return rho - 1.0
        if name == "ring":
            return (rho - 0.72).abs() - 0.28
        # Star with five points: the radius goes linearly (in angle) from 1.1 to 0.5 and back.
        t = torch.frac((torch.atan2(y, x) + math.pi / 2) * (5 / (2 * math.pi)) + 10)
        return (rho - (0.5 + 0.6 * (2 * t - 1).abs())) * 0.6
    if name == "triangle":
        return _polygon(x, y, 3, 1.15)
    if name == "hexagon":
        return _polygon(x, y, 6, 1.0)
    ax, ay = x.abs(), y.abs()
    if name == "square":
        return torch.maximum(ax, ay) - 0.82
    if name == "diamond":  # a rhombus, taller than wide, so no rotation turns it into a square
        return (ax + 0.62 * ay - 0.62) / math.hypot(1.0, 0.62)
    arm = 0.33  # cross
    return torch.minimum(torch.maximum(ax - 1, ay - arm), torch.maximum(ax - arm, ay - 1))


def _shape_alpha(attrs: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    """Coverage of each image's shape, (B, size, size) in [0, 1].

    Anti-aliased analytically: coverage falls linearly from 1 to 0 over one pixel around the
    SDF's zero level, a close stand-in for supersampling at a fraction of the cost.
    """
    row, col = _axes(size)
    alpha = torch.empty(attrs["shape"].numel(), size, size)
    for shape in attrs["shape"].unique().tolist():
        idx = (attrs["shape"] == shape).nonzero().squeeze(1)
        r, a = attrs["radius"][idx].view(-1, 1, 1), attrs["angle"][idx].view(-1, 1, 1)
        dx = row - attrs["cx"][idx].view(-1, 1, 1)  # (b, 1, size)
        dy = col - attrs["cy"][idx].view(-1, 1, 1)  # (b, size, 1)
        cos, sin = torch.cos(a) / r, torch.sin(a) / r
        d = _unit_sdf(shape, dx * cos + dy * sin, dy * cos - dx * sin)  # (b, size, size)
        scale = r * (size / 2)  # unit-radius distance -> pixels
        outline = attrs["style"][idx].view(-1, 1, 1) == 1
        d = torch.where(outline, d.abs() - _OUTLINE / r, d)
        alpha[idx] = (0.5 - d * scale).clamp_(0, 1)
    return alpha


def _background(attrs: dict[str, torch.Tensor], g: torch.Generator) -> torch.Tensor:
    """Dark or light tone, a small tint and low-frequency texture; (B, 3, 32, 32)."""
    count = attrs["dark"].numel()
    dark = attrs["dark"].bool()
    tone = torch.where(dark, _uniform(g, count, 0.05, 0.30), _uniform(g, count, 0.60, 0.90))
    tint = (torch.rand(count, 3, generator=g) - 0.5) * 0.12
    amplitude = _uniform(g, count, 0.03, 0.10).view(-1, 1, 1, 1)
    coarse = torch.randn(count, 1, 4, 4, generator=g) * amplitude
    coarse = coarse + torch.randn(count, 3, 4, 4, generator=g) * 0.04
    coarse = coarse + (tone.view(-1, 1) + tint).view(-1, 3, 1, 1)
    return F.interpolate(coarse, size=IMAGE_SIZE, mode="bilinear", align_corners=False)


def _add_specks(image: torch.Tensor, g: torch.Generator, specks: int = 3) -> None:
    """Clutter: paint up to ``specks`` random-coloured 2x2 or 3x3 dots into ``image`` in place."""
    count, _, size, _ = image.shape
    offsets = torch.tensor([(dy, dx) for dy in range(3) for dx in range(3)])  # (9, 2)
    for _ in range(specks):  # one speck per image at a time: no duplicate indices below
        corner = torch.randint(size - 2, (count, 2), generator=g)
        big = torch.rand(count, generator=g) < 0.5
        present = torch.rand(count, generator=g) < 0.6
        color = torch.rand(count, 3, generator=g)
        keep = present.view(-1, 1) & (big.view(-1, 1) | (offsets < 2).all(1))  # (B, 9)
        b, k = keep.nonzero(as_tuple=True)
        pixel = corner[b] + offsets[k]
        for c in range(3):
            image[b, c, pixel[:, 0], pixel[:, 1]] = color[b, c]


def _render(attrs: dict[str, torch.Tensor], g: torch.Generator) -> torch.Tensor:
    """Compose background, specks and the shape, add pixel noise; (B, 3, 32, 32) uint8."""
    count = attrs["shape"].numel()
    image = _background(attrs, g)
    _add_specks(image, g)
    # Colour jitter: brightness scale and a small per-channel shift, then a soft linear shading.
    rgb = _RGB[attrs["color"]] * _uniform(g, count, 0.8, 1.1).view(-1, 1)
    rgb = (rgb + (torch.rand(count, 3, generator=g) - 0.5) * 0.14).view(-1, 3, 1, 1)
    light = torch.rand(count, generator=g) * (2 * math.pi)
    row, col = _axes(IMAGE_SIZE)
    dx = row - attrs["cx"].view(-1, 1, 1)  # (B, 1, W)
    dy = col - attrs["cy"].view(-1, 1, 1)  # (B, H, 1)
    slope = (0.25 / attrs["radius"]).view(-1, 1, 1)  # +-25% brightness across the shape
    shade = 1.0 + dx * (slope * torch.cos(light).view(-1, 1, 1))
    shade = shade + dy * (slope * torch.sin(light).view(-1, 1, 1))  # (B, H, W)
    alpha = _shape_alpha(attrs, IMAGE_SIZE).unsqueeze(1)  # (B, 1, H, W)
    image += alpha * (rgb * shade.unsqueeze(1) - image)
    # Per-pixel luminance noise, uniform with a per-image standard deviation in [0.02, 0.07].
    sigma = _uniform(g, count, 0.02, 0.07).view(-1, 1, 1, 1) * math.sqrt(12)
    image += (torch.rand(count, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g) - 0.5) * sigma
    return image.mul_(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def position_words(cx: torch.Tensor, cy: torch.Tensor) -> list[str]:
    """'center', 'left', 'right', 'top' or 'bottom' for each centre (y grows downwards)."""
    words = []
    for x, y in zip(cx.tolist(), cy.tolist(), strict=True):
        if max(abs(x), abs(y)) < 0.2:
            words.append("center")
        elif abs(x) >= abs(y):
            words.append("left" if x < 0 else "right")
        else:
            words.append("top" if y < 0 else "bottom")
    return words


def _captions(attrs: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """One short caption (at most 13 words) per image, built from its attributes."""
    places = position_words(attrs["cx"], attrs["cy"])
    keys = ("phrasing", "style", "size", "color", "shape", "dark")
    captions = []
    rows = zip(places, *(attrs[k].tolist() for k in keys), strict=True)
    for place, pick, style, size, color, shape, dark in rows:
        text = _PHRASINGS[style][pick].format(
            size=SIZES[size],
            color=COLORS[color],
            shape=SHAPES[shape],
            place=_PLACE[place],
            bg="dark" if dark else "light",
        )
        captions.append(re.sub(r"\ba (?=[aeiou])", "an ", text))
    return tuple(captions)
