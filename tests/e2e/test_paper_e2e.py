"""The paper presets themselves, end to end, with the real architectures on a CPU (nothing downloaded).

``paper-vit-b32`` and ``paper-rn50`` run as shipped except for paths, steps, inner-attack steps and batch size (and a
small class list, so that zero-shot heads need 3 classes, not ImageNet's 1000 x 80 prompts): random
ViT-L-14 / ViT-B-32 / RN50 weights saved here stand in for the checkpoints, on a tiny ImageFolder
tree of 224-px JPEGs. One ViT-L-14 file serves both teachers. The ViT-B-32 student is then evaluated
(`mmt-ard evaluate`: PGD, the sanity suite, zero-shot accuracy, CLIP_benchmark JSON).

The stand-ins are float16 files, as many released checkpoints are (loading casts them to the model's float32), and
every folder of real-size checkpoints is deleted as soon as it has been checked: the test would otherwise hold
6.4 GB on disk, and CI's disk is shared with a 6.5 GB virtual environment.
"""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import open_clip
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from mmt_ard.cli.main import main
from mmt_ard.precision import bf16_native

CLASSES = ["goldfish", "tabby cat", "school bus"]


def save_random(arch: str, path: Path) -> Path:
    """Random weights of ``arch`` as a float16 safetensors file (half the disk of float32)."""
    torch.manual_seed(0)
    model = open_clip.create_model(arch)
    save_file({k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def write_imagenet_like(root: Path) -> None:
    """ROOT/{train,holdout,val}/nXXXX/*.JPEG, 224-px noise with a class-coloured square."""
    gen = torch.Generator().manual_seed(0)
    for split, per_class in (("train", 2), ("holdout", 1), ("val", 1)):
        for c in range(len(CLASSES)):
            folder = root / split / f"n0000000{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                img = torch.randint(0, 256, (224, 224, 3), generator=gen, dtype=torch.uint8)
                img[64:160, 64:160, c] = 255
                Image.fromarray(img.numpy()).save(folder / f"{i}.JPEG", quality=90)
    (root / "classnames.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "templates.txt").write_text("a photo of a {}.\n")


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("paper")
    write_imagenet_like(root / "imagenet")
    yield {
        "root": root,
        "vitl14": save_random("ViT-L-14-quickgelu", root / "vitl14.safetensors"),
        "vitb32": save_random("ViT-B-32-quickgelu", root / "vitb32.safetensors"),
        "rn50": save_random("RN50-quickgelu", root / "rn50.safetensors"),
    }
    shutil.rmtree(root, ignore_errors=True)  # 1.4 GB


def spec(root: Path, split: str) -> str:
    return f"folder:${{IMAGENET_ROOT}}:split={split},classnames={root}/classnames.txt,templates={root}/templates.txt"


def test_paper_presets_train_and_evaluate_with_real_architectures(standins, monkeypatch, tmp_path):
    imagenet = standins["root"] / "imagenet"
    monkeypatch.setenv("IMAGENET_ROOT", str(imagenet))
    monkeypatch.setenv("CLEAN_TEACHER", str(standins["vitl14"]))
    monkeypatch.setenv("ADV_TEACHER", str(standins["vitl14"]))  # a whole CLIP: its vision tower is used
    common = [
        "optim.batch_size=2",
        f"teacher_adv.pretrained={standins['vitl14']}",
        f"data={spec(imagenet, 'train')}",
        f"eval.dataset={spec(imagenet, 'holdout')}",
        "loop.data.workers=1",
        "eval.workers=1",
        "eval.limit=2",
        "eval.pgd.steps=1",
        "attack.steps=2",
    ]  # the preset's 10-step inner attack is the same loop, 5x the time
    # one step each: the optimizer step that changes the student is the same code at every step
    for preset, student, steps in (("paper-vit-b32", "vitb32", 1), ("paper-rn50", "rn50", 1)):
        out = tmp_path / preset
        code = main(
            [
                "distill",
                "--config",
                preset,
                "--output",
                str(out),
                f"student.pretrained={standins[student]}",
                f"optim.steps={steps}",
                *common,
            ]
        )
        assert code == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["val"]["acc"] >= 0 and "racc/2/255" in summary["val"]  # the preset's validation ran
        config = yaml.safe_load((out / "config.yaml").read_text())["config"]
        # the preset asks for bf16: it runs where this CPU has it natively, else falls back to float32
        expected = "bf16" if bf16_native(torch.device("cpu")) else "fp32"
        assert config["teacher_adv"]["arch"] == "ViT-L-14-quickgelu" and config["loop"]["precision"] == expected
        trained = load_file(str(out / "student" / "open_clip_model.safetensors"))
        start = load_file(str(standins[student]))
        assert trained.keys() == start.keys() and trained["visual.conv1.weight"].dtype == torch.float32
        # the student learned (it started from exactly the float16 values, cast)
        assert not torch.equal(trained["visual.conv1.weight"], start["visual.conv1.weight"].float())
        assert {p.name for p in (out / "checkpoints").iterdir()} >= {"last.pt", "best.pt"}
        shutil.rmtree(out / "checkpoints")  # 1.1-1.9 GB; the export stays for the evaluation below

    # the evaluation command on one student (RN50's PGD at 224 px already ran in its preset's validation)
    code = main(
        [
            "evaluate",
            "--model",
            f"vitb32={tmp_path / 'paper-vit-b32' / 'student'}",
            "--output",
            str(tmp_path / "eval"),
            f"eval.dataset={spec(imagenet, 'val')}",
            f'eval.zero_shot=["{spec(imagenet, "holdout")}"]',
            "eval.eps=[1/255,4/255]",
            "eval.pgd.steps=2",
            "clip_benchmark_json=true",
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    r = results["vitb32"]
    assert 0 <= r["racc"]["4/255"] <= r["racc"]["1/255"] <= r["acc"] <= 100 and "imagenet" in r["zero_shot"]
    assert set(r["sanity"]) >= {"monotone_in_eps", "nonzero_gradients"}  # the sanity suite ran on the real model
    files = [p.name for p in (tmp_path / "eval" / "clip_benchmark").glob("*.json")]
    assert files == ["imagenet_vitb32_ViT-B-32-quickgelu_en_zeroshot_classification.json"]
