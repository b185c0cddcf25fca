"""distill end to end: resume equals uninterrupted training; exports load with open_clip alone."""

import json
import subprocess
import sys

import pytest
import torch

from mmt_ard.distill.run import run_distill
from mmt_ard.errors import UserError
from mmt_ard.evaluation import ModelResult
from tests.helpers import student_weights, tiny_cfg


@pytest.mark.parametrize(
    "extra",
    [
        ["loss.strategy.name=adaptive-norm", "loop.eval_every=2"],  # stateful strategy, validation between
        ["lora.enabled=true", "lora.rank=2", "lora.dropout=0.5", "student.arch=mmt-rn-s"],  # dropout RNG + BatchNorm
    ],
    ids=["adaptive-norm", "lora-resnet"],
)
def test_resume_gives_the_same_weights_as_one_run(tmp_path, extra):
    run_distill(tiny_cfg(tmp_path / "once", *extra))
    stopped = run_distill(tiny_cfg(tmp_path / "twice", *extra, "loop.stop_after=4"))
    assert stopped["stopped_at"] == 4 and not (tmp_path / "twice" / "student").exists()
    run_distill(tiny_cfg(tmp_path / "twice", *extra), resume=True)
    steps = [json.loads(r)["step"] for r in (tmp_path / "twice" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [
        json.loads(r)["step"]
        for r in (tmp_path / "twice" / "metrics.jsonl").read_text().splitlines()
        if json.loads(r)["split"] == "train"
    ]
    assert train_steps == [1, 2, 3, 4, 5, 6] and steps[-1] == 6
    once, twice = student_weights(tmp_path / "once"), student_weights(tmp_path / "twice")
    assert once.keys() == twice.keys()
    assert all(torch.equal(once[k], twice[k]) for k in once)
    # and training did change the student (the comparison is not vacuous)
    start = run_distill(tiny_cfg(tmp_path / "zero", *extra, "optim.steps=1", "optim.lr=1e-12"))
    assert start and any(not torch.equal(once[k], v) for k, v in student_weights(tmp_path / "zero").items())


def test_existing_run_is_not_clobbered(tmp_path):
    run_distill(tiny_cfg(tmp_path / "r", "optim.steps=1"))
    before = (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(UserError, match="--resume"):
        run_distill(tiny_cfg(tmp_path / "r", "optim.steps=1"))
    assert (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes() == before


def test_validation_during_training_skips_the_sanity_suite(tmp_path, monkeypatch):
    from mmt_ard.evaluation import evaluate_model, sanity
    from mmt_ard.models import ModelSpec, load_clip

    def no_sanity(*args, **kwargs):
        raise AssertionError("the sanity suite ran")

    monkeypatch.setattr(sanity, "run_sanity_checks", no_sanity)
    summary = run_distill(tiny_cfg(tmp_path / "r", "optim.steps=1", "loop.eval_every=1", "eval.sanity=true"))
    assert "racc/2/255" in summary["val"]  # validated, with its attack, but without the sanity suite
    cfg = tiny_cfg(tmp_path / "r", "eval.sanity=true").eval  # the patch is what a reported evaluation calls
    with pytest.raises(AssertionError, match="sanity suite ran"):
        evaluate_model(load_clip(ModelSpec("mmt-vit-s")), cfg)


OPEN_CLIP_ONLY = """
import json, sys, torch, open_clip
arch_json, folders = sys.argv[1], sys.argv[2:]
open_clip.add_model_config(arch_json)
for folder in folders:
    m1 = open_clip.create_model("local-dir:" + folder)
    arch = json.load(open(folder + "/open_clip_config.json"))["arch"]
    m2 = open_clip.create_model(arch, pretrained=folder + "/open_clip_model.safetensors")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    pre = open_clip.get_model_preprocess_cfg(m1)
    x = (x - torch.tensor(pre["mean"]).view(1, 3, 1, 1)) / torch.tensor(pre["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        a = torch.nn.functional.normalize(m1.eval().encode_image(x), dim=-1)
        b = torch.nn.functional.normalize(m2.eval().encode_image(x), dim=-1)
    assert torch.allclose(a, b)
    print(json.dumps(a.tolist()))
assert not any(name.startswith("mmt_ard") for name in sys.modules), "mmt_ard was imported"
"""


def test_student_exports_load_with_open_clip_alone(tmp_path):
    """A full and a LoRA student (merged), both loaded by open_clip in one process that never imports mmt_ard."""
    from mmt_ard.models import ModelSpec, load_clip
    from mmt_ard.models.archs import ARCH_DIR

    runs = {"full": [], "lora": ["lora.enabled=true", "lora.rank=2", "optim.lr=0.05"]}
    for name, extra in runs.items():
        run_distill(tiny_cfg(tmp_path / name, "optim.steps=2", *extra))
    folders = [str(tmp_path / name / "student") for name in runs]
    out = subprocess.run(
        [sys.executable, "-c", OPEN_CLIP_ONLY, str(ARCH_DIR / "mmt-vit-s.json"), *folders],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()[-2:]
    for folder, line in zip(folders, lines, strict=True):
        theirs = torch.tensor(json.loads(line))
        ours = load_clip(ModelSpec("mmt-vit-s", folder)).eval()
        with torch.no_grad():
            mine = ours.encode_image(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
        assert torch.allclose(theirs, mine, atol=1e-5)
    assert (tmp_path / "lora" / "adapters" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "lora" / "adapters" / "adapter_config.json").is_file()


def test_resume_refuses_a_changed_config_and_keeps_the_original(tmp_path):
    run_distill(tiny_cfg(tmp_path / "r", "loop.stop_after=2"))
    config_before = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(UserError, match="'loss'"):
        run_distill(tiny_cfg(tmp_path / "r", "loss.gamma=2.0"), resume=True)
    assert (tmp_path / "r" / "config.yaml").read_text() == config_before
    run_distill(tiny_cfg(tmp_path / "r", "loop.log_every=2"), resume=True)  # loop.* may change
    assert (tmp_path / "r" / "student").is_dir()


def test_loop_select_exports_the_best_validated_checkpoint(tmp_path, monkeypatch):
    from mmt_ard.training import loop

    scores = iter([50.0, 70.0, 60.0])  # validations at steps 2, 4 and 6: step 4 is the best
    monkeypatch.setattr(loop, "evaluate_model", lambda *a, **k: ModelResult(acc=next(scores, 0.0)))
    extra = ["loop.eval_every=2", "loop.select=acc"]
    summary = run_distill(tiny_cfg(tmp_path / "sel", *extra))
    assert summary["selected"] == {"step": 4, "metric": "acc", "value": 70.0}
    run_distill(tiny_cfg(tmp_path / "at4", "loop.stop_after=4"))
    at4 = torch.load(tmp_path / "at4" / "checkpoints" / "last.pt", weights_only=True)["model"]
    exported = student_weights(tmp_path / "sel")
    assert all(torch.equal(exported[k], at4[k]) for k in exported)  # the step-4 weights, not the last
    last = torch.load(tmp_path / "sel" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert not all(torch.equal(exported[k], last[k]) for k in exported)
    with pytest.raises(UserError, match="not a validation metric"):
        run_distill(tiny_cfg(tmp_path / "bad", "loop.eval_every=2", "loop.select=nope"))
