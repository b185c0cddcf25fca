"""Data set specs, the dataset registry, built-in and folder data sets, and the loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from mmt_ard.data import (
    DATASETS,
    TASKS,
    CaptionedImages,
    DatasetSpec,
    LabeledImages,
    build_caption_dataset,
    build_dataset,
    list_builtin_tasks,
    loader,
)
from mmt_ard.errors import UserError


@pytest.mark.parametrize(
    "text",
    [
        "builtin:shapes",
        "builtin:shapes:split=test",
        "builtin:captions:split=train,n=2000",
        "folder:/data/imagenet/val",
        "folder:/data/pets:split=test,classnames=/data/pets/classnames.txt,size=224",
    ],
)
def test_spec_round_trips(text: str) -> None:
    spec = DatasetSpec.parse(text)
    assert str(spec) == text
    assert DatasetSpec.parse(str(spec)) == spec


def test_spec_fields() -> None:
    spec = DatasetSpec.parse("builtin:captions:split=train,n=2000")
    assert (spec.kind, spec.name) == ("builtin", "captions")
    assert spec.options == {"split": "train", "n": "2000"}


@pytest.mark.parametrize(
    ("text", "name", "options"),
    [
        ("folder:C:/data/pets", "C:/data/pets", {}),
        ("folder:C:/data/pets:size=32", "C:/data/pets", {"size": "32"}),
        ("folder:/data/a:b", "/data/a:b", {}),
        ("folder:/data/a:b:split=test,size=64", "/data/a:b", {"split": "test", "size": "64"}),
    ],
)
def test_folder_paths_may_contain_colons(text: str, name: str, options: dict[str, str]) -> None:
    spec = DatasetSpec.parse(text)
    assert (spec.name, spec.options) == (name, options)
    assert str(spec) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "KIND:NAME"),
        ("shapes", "KIND:NAME"),
        ("builtin:", "KIND:NAME"),
        ("builtin::split=test", "empty NAME"),
        ("builtin:shapes:split", "bad option 'split'"),
        ("builtin:shapes:=test", "bad option '=test'"),
        ("builtin:shapes:n=1,n=2", "given twice"),
    ],
)
def test_malformed_specs_are_user_errors(text: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        DatasetSpec.parse(text)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("web:shapes", ["'web'", "builtin, clip_benchmark, folder, wds"]),
        ("builtin:squares", ["'squares'", "shapes, combos, outlines, captions"]),
        ("builtin:shapes:split=dev", ["'dev'", "train, val, test"]),
        ("builtin:shapes:n=many", ["n='many'", "integer"]),
        ("builtin:shapes:n=0", ["n=0", "at least 1"]),
        ("builtin:shapes:seed=x", ["seed='x'", "integer"]),
        ("builtin:captions", ["builtin:captions", "builtin:shapes"]),
    ],
)
def test_bad_builtin_specs_name_the_problem_and_choices(text: str, fragments: list[str]) -> None:
    with pytest.raises(UserError) as err:
        build_dataset(text)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_captions_from_a_labelled_task_are_a_user_error() -> None:
    with pytest.raises(UserError, match="builtin:captions"):
        build_caption_dataset("builtin:shapes:split=test")


@pytest.mark.parametrize("kind", list(DATASETS))
def test_every_kind_rejects_unknown_options(kind: str) -> None:
    with pytest.raises(UserError, match="unknown option.*bogus.*valid options"):
        build_dataset(f"{kind}:whatever:bogus=1")


def test_registry_and_task_listing() -> None:
    assert DATASETS.names() == ["builtin", "clip_benchmark", "folder", "wds"]
    tasks = list_builtin_tasks()
    assert set(tasks) == set(TASKS) and all(tasks.values())


@pytest.mark.parametrize(("task", "classes"), [("shapes", 24), ("combos", 24), ("outlines", 8)])
def test_builtin_labelled_dataset(task: str, classes: int) -> None:
    ds = build_dataset(f"builtin:{task}:split=test,n=40")
    assert isinstance(ds, LabeledImages) and len(ds) == 40
    assert ds.name == task and ds.spec == f"builtin:{task}:split=test,n=40"
    assert len(ds.classnames) == classes and all("{}" in t for t in ds.templates)
    image, label = ds[3]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert image.min() >= 0 and image.max() <= 1
    assert isinstance(label, int) and label == int(ds.labels[3])
    assert ds.images_uint8 is not None and ds.images_uint8.shape == (40, 3, 32, 32)
    assert torch.equal(image, ds.images_uint8[3].float() / 255)


def test_builtin_caption_dataset() -> None:
    ds = build_caption_dataset("builtin:captions:n=30,seed=2")
    assert isinstance(ds, CaptionedImages) and len(ds) == 30
    image, caption = ds[0]
    assert image.shape == (3, 32, 32) and isinstance(caption, str) and caption
    batch_images, batch_captions = next(iter(loader(ds, batch_size=8)))
    assert batch_images.shape == (8, 3, 32, 32) and list(batch_captions) == ds.captions[:8]


def test_loader_shuffles_by_seed_and_drops_last() -> None:
    ds = build_dataset("builtin:shapes:split=val,n=50")

    def order(seed: int) -> list[int]:
        return torch.cat([y for _, y in loader(ds, 16, shuffle=True, seed=seed)]).tolist()

    assert order(0) == order(0) and order(0) != order(1)
    assert sorted(order(0)) == sorted(ds.labels.tolist())
    assert len(loader(ds, 16, drop_last=True)) == 3 and len(loader(ds, 16)) == 4
    with pytest.raises(UserError, match="batch size"):
        loader(ds, 0)


def _write_png(path: Path, color: tuple[int, int, int], size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def pets(tmp_path: Path) -> Path:
    """pets/test/{big_dog, tabby_cat}: red dogs and blue cats of several sizes."""
    root = tmp_path / "pets"
    for i, size in enumerate([(40, 30), (30, 50)]):
        _write_png(root / "test" / "big_dog" / f"{i}.png", (250, 0, 0), size)
        _write_png(root / "test" / "tabby_cat" / f"{i}.png", (0, 0, 250), size)
    _write_png(root / "test" / "tabby_cat" / "2.png", (0, 0, 250), (64, 64))
    (root / "classnames.txt").write_text("dog\ncat\n")
    (root / "templates.txt").write_text("a photo of a {}.\na pet {}.\n")
    return root


def test_folder_dataset(pets: Path) -> None:
    spec = f"folder:{pets}:split=test,classnames={pets}/classnames.txt,templates={pets}/templates.txt,size=32"
    ds = build_dataset(spec)
    assert ds.name == "pets" and ds.spec == spec and len(ds) == 5
    assert ds.classnames == ["dog", "cat"] and ds.templates == ["a photo of a {}.", "a pet {}."]
    assert ds.labels.tolist() == [0, 0, 1, 1, 1] and ds.images_uint8 is None
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert image.min() >= 0 and image.max() <= 1
        red, blue = image[0].mean(), image[2].mean()
        assert (red > 0.9 and blue < 0.1) if label == 0 else (blue > 0.9 and red < 0.1)


def test_folder_defaults(pets: Path) -> None:
    ds = build_dataset(f"folder:{pets / 'test'}")
    assert ds.classnames == ["big dog", "tabby cat"] and ds.templates == ["a photo of a {}."]
    assert ds.name == "test" and ds[0][0].shape == (3, 224, 224)


def test_non_image_files_are_left_out_and_counted_or_named_when_strict(pets: Path, caplog) -> None:
    (pets / "test" / "big_dog" / "notes.txt").write_text("not a picture")
    with caplog.at_level("WARNING", logger="mmt_ard"):
        ds = build_dataset(f"folder:{pets}:split=test")
    assert len(ds) == 5 and "left out 1 non-image file" in caplog.text
    with pytest.raises(UserError, match="notes.txt"):
        build_dataset(f"folder:{pets}:split=test,strict=true")


def test_undecodable_images_are_skipped_and_counted_or_named_when_strict(pets: Path, caplog) -> None:
    (pets / "test" / "big_dog" / "broken.png").write_bytes(b"definitely not a png")
    good = pets / "test" / "big_dog" / "1.png"
    (pets / "test" / "big_dog" / "truncated.png").write_bytes(good.read_bytes()[:40])
    ds = build_dataset(f"folder:{pets}:split=test,size=32")
    names = [path.name for path in ds.files]
    broken, truncated = names.index("broken.png"), names.index("truncated.png")
    with caplog.at_level("WARNING", logger="mmt_ard"):
        image, label = ds[broken]  # the next readable sample stands in, with its own label
        again = ds[truncated]
    nxt = next(i for i in range(broken + 1, len(ds)) if names[i] not in ("broken.png", "truncated.png"))
    assert torch.equal(image, ds[nxt][0]) and label == int(ds.labels[nxt])
    assert again[0].shape == (3, 32, 32)
    assert "broken.png" in caplog.text and "2 bad file(s) skipped" in caplog.text
    strict = build_dataset(f"folder:{pets}:split=test,size=32,strict=true")
    with pytest.raises(UserError, match="broken.png"):
        strict[broken]


@pytest.mark.parametrize(
    ("suffix", "fragment"),
    [
        (":split=train", "does not exist"),
        (":split=test,templates={root}/classnames.txt", "one template per line"),
        (":split=test,templates={root}/missing.txt", "cannot read the templates file"),
        (":split=test,size=0", "at least 1"),
    ],
)
def test_bad_folder_specs(pets: Path, suffix: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        build_dataset(f"folder:{pets}" + suffix.format(root=pets))


def test_folder_errors(pets: Path, tmp_path: Path) -> None:
    empty = tmp_path / "flat"
    _write_png(empty / "a.png", (0, 0, 0), (8, 8))
    with pytest.raises(UserError, match="no class subfolders"):
        build_dataset(f"folder:{empty}")
    (pets / "classnames.txt").write_text("only one\n")
    with pytest.raises(UserError, match="1 names but"):
        build_dataset(f"folder:{pets}:split=test,classnames={pets}/classnames.txt")
    with pytest.raises(UserError, match="builtin:captions"):
        build_caption_dataset(f"folder:{pets}:split=test")
