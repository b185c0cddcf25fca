"""A checkpoint is untrusted input: a pickle payload must never run, at any load site."""

import os

import pytest
import torch

from mmt_ard.errors import CheckpointError
from mmt_ard.models import ModelSpec, TextHeadCache, load_clip
from tests.conftest import CLASSES, TEMPLATES, tiny_clip


class Payload:
    """Unpickling this creates the folder ``marker``: proof that code ran."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def poisoned(path, marker, state=None):
    """A checkpoint that looks right (real weights) but carries the payload."""
    torch.save({"state_dict": state or {}, "extra": Payload(marker)}, path)
    return path


def test_the_payload_is_live(tmp_path):
    poisoned(tmp_path / "p.pt", tmp_path / "ran")
    torch.load(tmp_path / "p.pt", weights_only=False)  # what an unsafe loader would do
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize("site", ["pretrained", "vision"])
def test_model_checkpoints_never_run_code(tmp_path, site):
    marker = tmp_path / "ran"
    state = tiny_clip("mmt-vit-s").model.state_dict()
    evil = poisoned(tmp_path / "evil.pt", marker, state if site == "pretrained" else None)
    spec = ModelSpec("mmt-vit-s", **{site: str(evil)})
    with pytest.raises(CheckpointError, match="never pickled code"):
        load_clip(spec)
    assert not marker.exists()


def test_training_checkpoint_on_resume_never_runs_code(tmp_path):
    from mmt_ard.cli.main import main

    marker = tmp_path / "ran"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    poisoned(run / "checkpoints" / "last.pt", marker)
    code = main(
        [
            "distill",
            "--output",
            str(run),
            "--resume",
            "data=builtin:shapes:split=train,n=64",
            "teacher_clean.arch=mmt-vit-s",
            "teacher_adv.arch=mmt-vit-s",
            "optim.steps=2",
            "optim.batch_size=8",
            "eval.limit=8",
        ]
    )
    assert code == 2 and not marker.exists()


def test_text_head_cache_entries_never_run_code(tmp_path, caplog):
    marker = tmp_path / "ran"
    clip = tiny_clip("mmt-vit-s")
    cache = TextHeadCache(tmp_path / "cache")
    good = cache.head(clip, CLASSES, TEMPLATES)
    entry = tmp_path / "cache" / "heads" / f"{cache.key(clip, CLASSES, TEMPLATES)}.pt"
    assert entry.is_file()
    torch.save({"head": Payload(marker)}, entry)
    again = TextHeadCache(tmp_path / "cache").head(clip, CLASSES, TEMPLATES)  # a fresh cache reads the file
    assert not marker.exists()
    assert torch.allclose(again, good)  # the bad entry was recomputed, not trusted
