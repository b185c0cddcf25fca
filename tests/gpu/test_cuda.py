"""Every path users run on a GPU, on a GPU: marked ``cuda``, skipped without one.

``scripts/gpu_check.sh`` runs these and the ViT-L-14 bench on one GPU. On a machine without CUDA
they skip; ``MMT_ARD_CUDA_TESTS_ON_CPU=1`` runs them on the CPU instead, to check the tests
themselves (``pytest -m cuda`` with that set takes a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from mmt_ard.analysis import bound_radii, cam_maps
from mmt_ard.cli.main import main
from mmt_ard.demo import DemoPlan
from mmt_ard.experiments.analyses import _adversarial
from mmt_ard.precision import bf16_native
from tests.conftest import smoke_plan, tiny_classifier
from tests.e2e.test_paper_e2e import spec, standins  # noqa: F401 - standins is a fixture
from tests.helpers import TINY, torchrun_distill

ON_CPU = os.environ.get("MMT_ARD_CUDA_TESTS_ON_CPU") == "1"
# skipped at collection, so that no fixture (the ViT-L-14 stand-ins) is built only to be skipped
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not (torch.cuda.is_available() or ON_CPU),
        reason="no CUDA GPU (MMT_ARD_CUDA_TESTS_ON_CPU=1 runs these tests on the CPU)",
    ),
]


@pytest.fixture
def gpu() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_a_paper_preset_trains_in_bf16_and_evaluates_with_autoattack(gpu, standins, monkeypatch, tmp_path):
    imagenet = standins["root"] / "imagenet"
    monkeypatch.setenv("IMAGENET_ROOT", str(imagenet))
    monkeypatch.setenv("CLEAN_TEACHER", str(standins["vitl14"]))
    monkeypatch.setenv("ADV_TEACHER", str(standins["vitl14"]))
    out = tmp_path / "run"
    assert (
        main(
            [
                "distill",
                "--config",
                "paper-vit-b32",
                "--output",
                str(out),
                f"loop.device={gpu.type}",
                f"student.pretrained={standins['vitb32']}",
                f"teacher_adv.pretrained={standins['vitl14']}",
                f"data={spec(imagenet, 'train')}",
                f"eval.dataset={spec(imagenet, 'holdout')}",
                "optim.steps=2",
                "optim.batch_size=4",
                "loop.data.workers=1",
                "eval.workers=1",
                "eval.limit=3",
                "eval.pgd.steps=2",
                "attack.steps=3",
            ]
        )
        == 0
    )
    expected = "bf16" if bf16_native(gpu) else "fp32"
    assert f"precision: {expected}" in (out / "config.yaml").read_text()
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] == r["loss"] for r in rows if r["split"] == "train")  # finite (NaN != NaN)
    code = main(
        [
            "evaluate",
            "--model",
            f"s={out / 'student'}",
            "--output",
            str(tmp_path / "eval"),
            "--device",
            gpu.type,
            "--attack",
            "pgd+autoattack",
            "--eps",
            "2/255",
            "--limit",
            "3",
            f"eval.dataset={spec(imagenet, 'val')}",
            "eval.skip_unrunnable=true",
        ]
    )  # 3 classes: APGD-T cannot run, said in the results
    assert code == 0
    r = json.loads((tmp_path / "eval" / "results.json").read_text())["s"]
    assert 0 <= r["racc"]["2/255"] <= r["acc"] and r["skipped_attacks"]


def test_gradcam_and_the_bound_run_on_the_device(gpu):
    clf = tiny_classifier("mmt-vit-s", seed=1).to(gpu)
    teachers = [tiny_classifier("mmt-vit-t", seed=s).to(gpu) for s in (2, 3)]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=g).to(gpu)
    y = torch.arange(6, device=gpu) % 4
    x_adv = _adversarial(teachers[1], x, y, eps=2 / 255, seed=0, batch=4)  # the analyses' batched PGD
    assert x_adv.device.type == gpu.type and float((x_adv - x).abs().max()) <= 2 / 255 + 1e-6
    maps = cam_maps(clf, x, y)
    assert maps.shape == (6, 32, 32) and maps.max() > 0
    radii = bound_radii(clf, *teachers, x, y, adv_images=x_adv)
    assert radii["radius"].shape == (6,)


def test_the_gradcam_and_bound_experiments_run_on_the_device(gpu, tmp_path, monkeypatch):
    """`mmt-ard experiment gradcam bound` end to end (smoke-sized world and runs, one seed)."""
    monkeypatch.setattr(DemoPlan, "quick", staticmethod(smoke_plan))
    for name in ("gradcam", "bound"):
        assert (
            main(
                [
                    "experiment",
                    name,
                    "--quick",
                    "--seeds",
                    "1",
                    "--students",
                    "vit-s",
                    "--device",
                    gpu.type,
                    "--output",
                    str(tmp_path),
                    "--no-report",
                ]
            )
            == 0
        )
        assert json.loads((tmp_path / name / "results.json").read_text())["tables"]


def test_the_bench_runs_on_the_device(gpu, tmp_path):
    code = main(
        [
            "bench",
            "--preset",
            "builtin",
            "--device",
            gpu.type,
            "--steps",
            "1",
            "--warmup",
            "0",
            "--batch",
            "8",
            "--inner-steps",
            "1",
            "--switches",
            "none",
            "--matmul-seconds",
            "0.1",
            "--output",
            str(tmp_path),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert all(c["loss_check"]["passed"] for c in report["configurations"])
    assert {"fp32", "bf16-held"} <= report["frozen_forward"]["variants"].keys()


def test_distill_export_and_evaluate_on_the_device(gpu, tmp_path):
    run = tmp_path / "run"
    assert (
        main(["distill", "--output", str(run), *TINY, "optim.steps=2", f"loop.device={gpu.type}", "eval.limit=16"]) == 0
    )
    for fmt in ("open_clip", "vision-state-dict", "hf"):
        assert main(["export", str(run), "--format", fmt, "--output", str(tmp_path / fmt), "--device", gpu.type]) == 0
    code = main(
        [
            "evaluate",
            "--model",
            f"s={tmp_path / 'open_clip'}",
            "--output",
            str(tmp_path / "eval"),
            "--device",
            gpu.type,
            "--limit",
            "16",
            "--steps",
            "2",
            "eval.dataset=builtin:shapes:split=test",
        ]
    )
    assert code == 0


def test_torchrun_on_the_device(gpu, tmp_path):
    """One process per GPU (NCCL); with one GPU a single process under torchrun (no process group)."""
    procs = max(1, min(2, torch.cuda.device_count())) if gpu.type == "cuda" else 2
    extra = [*TINY, "optim.steps=2", f"loop.device={gpu.type}", "eval.limit=16"]
    done = torchrun_distill(tmp_path / "run", *extra, nproc=procs)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "student" / "open_clip_model.safetensors").exists()
