"""Shared fixtures: tiny CLIPs on CPU, an isolated cache, deterministic seeds."""

from __future__ import annotations

import pytest
import torch

from mmt_ard.models import ModelSpec, PixelCLIP, TextHeadCache, ZeroShotClassifier, load_clip

CLASSES = ["red circle", "blue square", "green triangle", "yellow star"]
TEMPLATES = ["a photo of a {}.", "a {}."]


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMT_ARD_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.manual_seed(0)


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
