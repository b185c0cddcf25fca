"""The shapes world: determinism, disjoint splits, class tables, rendering and captions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmt_ard.data import world
from mmt_ard.errors import UserError

SRC = Path(__file__).resolve().parents[3] / "src"


def _digest(split: world.WorldSplit) -> str:
    """A hash of images and labels, comparable across processes."""
    h = hashlib.sha256(split.images.numpy().tobytes())
    h.update(split.labels.numpy().tobytes())
    return h.hexdigest()


def _image_keys(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


def test_same_arguments_give_identical_tensors_even_after_clearing_the_cache() -> None:
    first = world.generate("captions", "train", n=200, seed=3)
    again = world.generate("captions", "train", n=200, seed=3)
    world.clear_cache()
    fresh = world.generate("captions", "train", n=200, seed=3)
    assert fresh is not first
    for other in (again, fresh):
        assert torch.equal(first.images, other.images)
        assert torch.equal(first.labels, other.labels)
        assert first.captions == other.captions


def test_another_process_generates_the_same_bits() -> None:
    code = (
        "from mmt_ard.data import world; import hashlib\n"
        "s = world.generate('shapes', 'test', n=64)\n"
        "h = hashlib.sha256(s.images.numpy().tobytes()); h.update(s.labels.numpy().tobytes())\n"
        "print(h.hexdigest())"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(world.generate("shapes", "test", n=64))


def test_first_images_do_not_depend_on_n() -> None:
    small = world.generate("outlines", "test", n=100)
    large = world.generate("outlines", "test", n=700)  # spans two chunks
    assert torch.equal(large.images[:100], small.images)
    assert torch.equal(large.labels[:100], small.labels)


def test_seed_changes_the_images() -> None:
    a = world.generate("shapes", "val", n=50, seed=0)
    b = world.generate("shapes", "val", n=50, seed=1)
    assert not _image_keys(a.images) & _image_keys(b.images)


def test_splits_share_no_image() -> None:
    train = _image_keys(world.generate("shapes", "train").images)
    val = _image_keys(world.generate("shapes", "val").images)
    test = _image_keys(world.generate("shapes", "test").images)
    assert len(train) == 12000 and len(val) == 1000 and len(test) == 1000  # no repeats inside
    assert not train & test and not train & val and not val & test


@pytest.mark.parametrize("task", list(world.TASKS))
def test_shapes_dtypes_and_ranges(task: str) -> None:
    split = world.generate(task, next(iter(world.TASKS[task].splits)), n=96)
    assert split.images.shape == (96, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.labels.shape == (96,) and split.labels.dtype == torch.long
    assert split.labels.min() >= 0 and split.labels.max() < len(world.TASKS[task].classnames)
    # The background is textured and noisy, not flat: every image has spread in its pixels.
    assert (split.images.float().flatten(1).std(1) > 3).all()


def test_class_counts_and_zero_shot_labels_are_disjoint_from_shapes() -> None:
    names = {task: set(info.classnames) for task, info in world.TASKS.items()}
    assert [len(names[t]) for t in ("shapes", "combos", "outlines", "captions")] == [24, 24, 8, 48]
    assert not names["combos"] & names["shapes"]
    assert not names["outlines"] & names["shapes"]
    assert names["combos"] | names["shapes"] == names["captions"]
    assert "red circle" in names["shapes"] and "green circle" in names["combos"]


@pytest.mark.parametrize("task", ["shapes", "combos", "outlines"])
def test_every_class_appears_in_a_test_split_of_1000(task: str) -> None:
    split = world.generate(task, "test")
    counts = torch.bincount(split.labels, minlength=len(world.TASKS[task].classnames))
    assert len(split.labels) == 1000 and (counts > 0).all()


@pytest.mark.parametrize("task", list(world.TASKS))
def test_attributes_agree_with_the_class_table(task: str) -> None:
    info = world.TASKS[task]
    split = world.generate(task, next(iter(info.splits)), n=300)
    attrs = split.attributes
    for label, color, shape, style in zip(
        *(t.tolist() for t in (split.labels, attrs["color"], attrs["shape"], attrs["style"])),
        strict=True,
    ):
        want_color, want_shape = info.classes[label]
        assert shape == want_shape and want_color in (color, world._ANY)
        assert info.style in (style, world._ANY)
    if task == "outlines":
        assert len(set(attrs["color"].tolist())) == len(world.COLORS)  # any colour
    if task == "captions":
        assert set(attrs["style"].tolist()) == {0, 1}  # both styles


# Which channel relations hold at the centre of a filled shape of each colour.
_DOMINANT = {
    "red": [(0, 1), (0, 2)],
    "green": [(1, 0), (1, 2)],
    "blue": [(2, 0), (2, 1)],
    "yellow": [(0, 2), (1, 2)],
    "purple": [(0, 1), (2, 1)],
    "orange": [(0, 1), (1, 2)],
}


def test_shape_centres_show_the_labelled_colour() -> None:
    split = world.generate("captions", "val")
    attrs = split.attributes
    filled = (attrs["style"] == 0) & (attrs["shape"] != world.SHAPES.index("ring"))
    checked = 0
    for i in filled.nonzero().squeeze(1).tolist():
        col = int((attrs["cx"][i] + 1) / 2 * world.IMAGE_SIZE)
        row = int((attrs["cy"][i] + 1) / 2 * world.IMAGE_SIZE)
        pixel = split.images[i, :, row, col].int()
        for hi, lo in _DOMINANT[world.COLORS[attrs["color"][i]]]:
            assert pixel[hi] > pixel[lo], (i, world.COLORS[attrs["color"][i]], pixel)
        checked += 1
    assert checked > 300


def test_captions_name_the_colour_shape_and_style() -> None:
    split = world.generate("captions", "train", n=500)
    attrs = split.attributes
    assert split.captions is not None and len(split.captions) == 500
    assert len(set(split.captions)) > 200  # varied phrasings and attributes
    for i, caption in enumerate(split.captions):
        words = caption.replace(",", "").split()
        assert len(words) <= 20
        assert world.COLORS[attrs["color"][i]] in words
        assert world.SHAPES[attrs["shape"][i]] in words
        outline_words = {"outline", "hollow", "line"} & set(words)
        assert bool(outline_words) == (attrs["style"][i] == 1), caption
        assert " a o" not in caption and " a a" not in caption  # articles agree


def test_position_words() -> None:
    cx = torch.tensor([0.0, -0.6, 0.6, 0.1, -0.1])
    cy = torch.tensor([0.1, 0.2, -0.3, -0.7, 0.5])
    assert world.position_words(cx, cy) == ["center", "left", "right", "top", "bottom"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("nope", "test"), "shapes, combos, outlines, captions"),
        (("combos", "train"), "test, val"),
        (("shapes", "test", 0), "positive integer"),
        (("shapes", "test", 1.5), "positive integer"),
    ],
)
def test_bad_arguments_are_user_errors(args: tuple, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        world.generate(*args)


def test_20000_caption_images_generate_quickly() -> None:
    world.clear_cache()
    start = time.perf_counter()
    split = world.generate("captions", "train")
    assert len(split.images) == 20000
    assert time.perf_counter() - start < 15
