"""Shared fixtures: tiny CLIPs on CPU, an isolated cache, deterministic seeds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mmt_ard.demo import DemoPlan
from mmt_ard.models import ModelSpec, PixelCLIP, TextHeadCache, ZeroShotClassifier, load_clip

# Every test is marked by the folder it lives in: `pytest -m unit` (or `make test-fast`) is the fast set.
FOLDER_MARKERS = {
    "unit": "unit",
    "e2e": "e2e",
    "reliability": "reliability",
    "distributed": "distributed",
    "gpu": "cuda",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's marker (tests/unit -> unit, tests/e2e -> e2e, ...)."""
    root = Path(__file__).parent
    for item in items:
        folder = Path(item.fspath).relative_to(root).parts[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(FOLDER_MARKERS[folder])


CLASSES = ["red circle", "blue square", "green triangle", "yellow star"]
TEMPLATES = ["a photo of a {}.", "a {}."]


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test gets its own empty cache folder (deleted after it) and the same seed."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("MMT_ARD_CACHE", str(cache))
    torch.manual_seed(0)
    yield
    shutil.rmtree(cache, ignore_errors=True)


def tiny_clip(arch: str = "mmt-vit-s", seed: int = 0) -> PixelCLIP:
    torch.manual_seed(seed)
    return load_clip(ModelSpec(arch=arch))


def tiny_classifier(arch: str = "mmt-vit-s", seed: int = 0, classes: list[str] | None = None) -> ZeroShotClassifier:
    clip = tiny_clip(arch, seed)
    head = TextHeadCache(None).head(clip, classes or CLASSES, TEMPLATES)
    return ZeroShotClassifier(clip, head)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def smoke_plan(device: str = "auto") -> DemoPlan:
    """``--quick`` made smaller still: the tests check the plumbing, not the numbers."""
    return DemoPlan.load(
        "quick",
        pretrain_teacher_steps=20,
        pretrain_student_steps=20,
        pretrain_batch=32,
        clean_steps=10,
        adv_steps=10,
        distill_steps=6,
        distill_batch=16,
        inner_steps=1,
        eval_limit=48,
        eval_steps=2,
        device=device,
        caption_n=1000,
        train_n=300,
        apgd_iterations=2,
        apgd_targets=1,
        sanity_samples=8,
        gap_limit=4,
    )


@pytest.fixture(scope="session")
def smoke_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the smoke-sized built-in world: the demo test and the experiments test share its
    pretraining and teacher stages (whichever runs first builds them, the other reuses them)."""
    return tmp_path_factory.mktemp("smoke-world")
