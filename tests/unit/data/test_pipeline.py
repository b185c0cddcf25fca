"""Input pipelines: model preprocessing, worker-fed step batches, tar shards, clip_benchmark, JSON."""

import builtins
import json
import sys
import types
from pathlib import Path

import open_clip
import pytest
import torch
from PIL import Image

from mmt_ard import distributed
from mmt_ard.data import build_dataset
from mmt_ard.data.batches import batch_indices, labeled_batch
from mmt_ard.data.pipeline import LoaderConfig, Preprocess, StepBatches, model_preprocess, use_model_preprocess
from mmt_ard.data.shards import write_shards
from mmt_ard.errors import UserError
from mmt_ard.evaluation.clip_benchmark_json import benchmark_records, write_benchmark_json
from mmt_ard.evaluation.results import ModelResult
from tests.conftest import tiny_clip

CPU = torch.device("cpu")


def write_tree(root: Path, classes: list[str], per_class: int, size=(40, 28), fmt="JPEG") -> Path:
    """ROOT/CLASS/i.jpg: noise images (non-square, so resize mode and crop matter)."""
    gen = torch.Generator().manual_seed(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(root / c / f"{i}.{'jpg' if fmt == 'JPEG' else 'png'}", fmt)
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return write_tree(tmp_path / "tree", ["cat", "dog", "owl"], per_class=4)


def test_folder_images_follow_the_models_open_clip_preprocess(tree):
    clip = tiny_clip("mmt-vit-s")
    ds = build_dataset(f"folder:{tree}:size=64")
    assert ds.image(0).shape == (3, 64, 64)  # the spec's size until a model is known
    use_model_preprocess(ds, clip)
    ours = ds.image(5)  # (3, S, S) in [0, 1]
    cfg = open_clip.get_model_preprocess_cfg(clip.model)
    _, _, preprocess = open_clip.create_model_and_transforms("mmt-vit-s")  # open_clip's own eval transform
    theirs = preprocess(Image.open(ds.files[5]))
    mean, std = torch.tensor(cfg["mean"]).view(3, 1, 1), torch.tensor(cfg["std"]).view(3, 1, 1)
    assert ours.shape[-1] == clip.image_size
    assert torch.allclose((ours - mean) / std, theirs, atol=1e-5)  # open_clip's pipeline, normalization in the model


def test_preprocess_options_change_the_pixels(tree):
    img = Image.open(min(tree.rglob("*.jpg")))
    base = Preprocess(16).transform()(img)
    assert not torch.equal(base, Preprocess(16, resize_mode="squash").transform()(img))
    assert not torch.equal(base, Preprocess(16, interpolation="bilinear").transform()(img))
    assert model_preprocess(tiny_clip("mmt-vit-s")) == Preprocess(32, "bicubic", "shortest")


@pytest.mark.parametrize("workers", [0, 2])
def test_folder_batches_with_workers_equal_direct_indexing_and_restart_at_any_step(tree, workers):
    ds = build_dataset(f"folder:{tree}:size=16")
    batches = StepBatches(ds, 4, seed=1, device=CPU, cfg=LoaderConfig(workers=workers))
    for step in (0, 1, 2, 7, 8):  # a jump (7) restarts the sampler there, as a resume does
        x, y = batches(step)
        ex, ey = labeled_batch(ds, batch_indices(len(ds), 4, 1, step))
        assert torch.equal(x, ex) and torch.equal(y, ey)


@pytest.mark.parametrize("in_memory", [True, False])
def test_each_rank_gets_its_half_of_the_global_batch(tree, monkeypatch, in_memory):
    ds = build_dataset("builtin:shapes:split=val,n=40" if in_memory else f"folder:{tree}:size=16")
    whole, _ = StepBatches(ds, 4, seed=2, device=CPU)(3)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        x, _ = StepBatches(ds, 4, seed=2, device=CPU)(3)
        assert torch.equal(x, whole[2 * rank : 2 * rank + 2])


def test_tar_shards_hold_the_same_images_and_labels_as_the_folder(tree, tmp_path):
    folder = build_dataset(f"folder:{tree}:size=16")
    shards = write_shards(zip(folder.files, folder.labels.tolist()), str(tmp_path / "s" / "train-%04d.tar"), 5)
    assert len(shards) == 3  # 12 images, 5 per shard
    (tmp_path / "names.txt").write_text("cat\ndog\nowl\n")
    spec = f"wds:{tmp_path}/s/train-{{0000..0002}}.tar:classnames={tmp_path}/names.txt,size=16"
    ds = build_dataset(spec)
    assert ds.classnames == ["cat", "dog", "owl"] and torch.equal(ds.labels, folder.labels)
    assert all(torch.equal(ds.image(i), folder.image(i)) for i in range(len(ds)))
    x, y = StepBatches(ds, 4, seed=0, device=CPU, cfg=LoaderConfig(workers=2))(2)
    ex, ey = labeled_batch(folder, batch_indices(12, 4, 0, 2))
    assert torch.equal(x, ex) and torch.equal(y, ey)
    with pytest.raises(UserError, match="classnames"):
        build_dataset(f"wds:{tmp_path}/s/train-{{0000..0002}}.tar")
    with pytest.raises(UserError, match="train-0003.tar does not exist"):
        build_dataset(f"wds:{tmp_path}/s/train-{{0000..0003}}.tar:classnames=imagenet")
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    with pytest.raises(UserError, match="label 2 is outside the 2 classnames"):
        build_dataset(f"wds:{tmp_path}/s/train-{{0000..0002}}.tar:classnames={tmp_path}/two.txt")


@pytest.fixture
def imagenet_r(tmp_path, monkeypatch) -> Path:
    """A local imagenet-r root (clip_benchmark reads it as an ImageFolder): 3 class folders of 2 images."""
    try:  # clip_benchmark imports requests (for downloads) without declaring it; the extra adds it
        import requests  # noqa: F401
    except ImportError:
        monkeypatch.setitem(sys.modules, "requests", types.ModuleType("requests"))
    return write_tree(tmp_path / "imagenet-r", ["n01443537", "n01484850", "n01494475"], 2, size=(20, 20))


def test_clip_benchmark_specs_read_local_roots_with_its_classnames_and_templates(imagenet_r, tmp_path):
    from clip_benchmark.datasets.builder import build_dataset as cb_build

    ds = build_dataset(f"clip_benchmark:imagenet-r:root={imagenet_r},size=24")
    theirs = cb_build("imagenet-r", root=str(imagenet_r), transform=None, download=False)
    assert len(ds.classnames) == 200 and ds.classnames == list(theirs.classes)  # its names, not folder names
    assert ds.templates == list(theirs.templates)
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2] == theirs.targets
    assert ds.image(3).shape == (3, 24, 24) and ds.name == "imagenet-r"
    with pytest.raises(UserError, match="download=true"):  # never fetched unless asked
        build_dataset(f"clip_benchmark:imagenet-r:root={tmp_path}/absent")


def test_clip_benchmark_without_the_extra_says_how_to_install(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_clip_benchmark(name, *args, **kwargs):
        if name.startswith("clip_benchmark"):
            raise ImportError("No module named 'clip_benchmark'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_clip_benchmark)
    with pytest.raises(UserError, match=r"pip install 'mmt-ard\[benchmark\]'"):
        build_dataset(f"clip_benchmark:cifar10:root={tmp_path}")


def test_clip_benchmark_json_one_file_per_model_and_dataset(tmp_path):
    result = ModelResult(acc=61.5, racc={"2/255": 30.0}, zero_shot={"cifar10": 80.25, "imagenet-r": 40.0})
    records = benchmark_records(result, "imagenet", "ViT-B-32-quickgelu", "mmt-ard")
    assert records[0] == {
        "dataset": "imagenet",
        "model": "ViT-B-32-quickgelu",
        "pretrained": "mmt-ard",
        "task": "zeroshot_classification",
        "language": "en",
        "metrics": {"acc1": 0.615, "robust_acc1": {"2/255": 0.3}},
    }
    assert records[1]["metrics"] == {"acc1": 0.8025}
    files = write_benchmark_json(
        {"mmt-ard": result, "base": result},
        {"mmt-ard": "RN50", "base": "RN50"},
        "folder:/data/imagenet:split=val",
        tmp_path,
    )
    assert len(files) == 6 and all(f.is_file() for f in files)
    assert json.loads((tmp_path / "cifar10_base_RN50_en_zeroshot_classification.json").read_text())["metrics"] == {
        "acc1": 0.8025
    }


def test_a_corrupt_sample_in_a_shard_is_skipped_or_named_when_strict(tree, tmp_path, caplog):
    folder = build_dataset(f"folder:{tree}:size=16")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(folder.files[0].read_bytes()[:50])  # a truncated JPEG
    write_shards([(bad, 2), *zip(folder.files[1:4], folder.labels[1:4].tolist())], str(tmp_path / "s-%04d.tar"))
    (tmp_path / "names.txt").write_text("cat\ndog\nowl\n")
    spec = f"wds:{tmp_path}/s-0000.tar:classnames={tmp_path}/names.txt,size=16"
    ds = build_dataset(spec)
    with caplog.at_level("WARNING", logger="mmt_ard"):
        x, y = ds[0]
    assert torch.equal(x, folder.image(1)) and y == int(folder.labels[1]) and "1 bad file(s)" in caplog.text
    with pytest.raises(UserError, match="undecodable sample 0"):
        build_dataset(spec + ",strict=true")[0]
