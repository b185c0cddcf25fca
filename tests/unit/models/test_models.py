"""Loading CLIPs from every supported source, with clear errors; pixel-space wrapper; text-head cache."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from mmt_ard.errors import CheckpointError, UserError
from mmt_ard.models import ModelSpec, TextHeadCache, load_clip
from mmt_ard.models.export import export_open_clip
from tests.conftest import CLASSES, TEMPLATES, tiny_clip


def same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_open_clip_checkpoints_load(tmp_path):
    src = tiny_clip("mmt-vit-s", seed=5)
    torch.save({"state_dict": src.model.state_dict()}, tmp_path / "wrapped.pt")
    torch.save({"module." + k: v for k, v in src.model.state_dict().items()}, tmp_path / "ddp.bin")
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    for name in ("wrapped.pt", "ddp.bin", "m.safetensors"):
        assert same_weights(load_clip(ModelSpec("mmt-vit-s", str(tmp_path / name))), src)
    export_open_clip(src, tmp_path / "export")
    assert same_weights(load_clip(ModelSpec("mmt-vit-s", str(tmp_path / "export"))), src)


@pytest.mark.parametrize("layout", ["bare", "nested", "prefixed"])
def test_vision_only_state_dicts_load_over_the_vision_tower(tmp_path, layout):
    robust = tiny_clip("mmt-rn-s", seed=7)
    vision = robust.visual.state_dict()
    obj = {
        "bare": vision,
        "nested": {"vision_encoder_state_dict": vision, "epoch": torch.tensor(3)},
        "prefixed": {f"visual.{k}": v for k, v in vision.items()},
    }[layout]
    torch.save(obj, tmp_path / "fare.pt")
    base = tiny_clip("mmt-rn-s", seed=1)
    torch.save(base.model.state_dict(), tmp_path / "base.pt")
    clip = load_clip(ModelSpec("mmt-rn-s", str(tmp_path / "base.pt"), vision=str(tmp_path / "fare.pt")))
    assert all(torch.equal(v, vision[k]) for k, v in clip.visual.state_dict().items())
    text = {k: v for k, v in clip.model.state_dict().items() if not k.startswith("visual.")}
    assert all(torch.equal(v, base.model.state_dict()[k]) for k, v in text.items())


def test_vision_tower_of_a_whole_clip_export(tmp_path):
    robust = tiny_clip("mmt-vit-s", seed=3)
    export_open_clip(robust, tmp_path / "adv")
    clip = load_clip(ModelSpec("mmt-vit-s", vision=str(tmp_path / "adv")))
    assert all(torch.equal(v, robust.visual.state_dict()[k]) for k, v in clip.visual.state_dict().items())
    assert not torch.equal(clip.model.token_embedding.weight, robust.model.token_embedding.weight)


def test_architecture_mismatch_names_both_sides(tmp_path):
    torch.save(tiny_clip("mmt-vit-t").model.state_dict(), tmp_path / "t.pt")
    with pytest.raises(CheckpointError) as err:
        load_clip(ModelSpec("mmt-vit-s", str(tmp_path / "t.pt")))
    msg = str(err.value)
    assert "mmt-vit-s" in msg and "t.pt" in msg and "checkpoint (" in msg and "model (" in msg


def test_missing_corrupt_and_code_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_clip(ModelSpec("mmt-vit-s", str(tmp_path / "nope.pt")))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_clip(ModelSpec("mmt-vit-s", str(tmp_path / "bad.pt")))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError):
        load_clip(ModelSpec("mmt-vit-s", str(tmp_path / "evil.pt")))


def test_unknown_arch_and_tag_are_user_errors():
    with pytest.raises(UserError, match="unknown model architecture"):
        load_clip(ModelSpec("no-such-net"))
    with pytest.raises(UserError, match="tag"):
        load_clip(ModelSpec("ViT-B-32", "no-such-tag"))


def test_wrapper_normalizes_inside_and_returns_unit_embeddings(images):
    clip = tiny_clip().eval()
    with torch.no_grad():
        ours = clip.encode_image(images)
        manual = torch.nn.functional.normalize(clip.model.encode_image((images - clip.mean) / clip.std), dim=-1)
    assert torch.allclose(ours, manual, atol=1e-6)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(images)), atol=1e-5)


def test_text_heads_are_cached_on_disk_by_model_identity(tmp_path, monkeypatch):
    clip = tiny_clip()
    head = TextHeadCache(tmp_path).head(clip, CLASSES, TEMPLATES)
    assert head.shape == (len(CLASSES), clip.embed_dim)
    assert torch.allclose(head.norm(dim=-1), torch.ones(len(CLASSES)), atol=1e-5)
    assert len(list((tmp_path / "heads").glob("*.pt"))) == 1
    # a new cache object reads the file instead of running the text encoder
    monkeypatch.setattr("mmt_ard.models.zeroshot.build_text_head", lambda *a, **k: pytest.fail("recomputed"))
    assert torch.equal(TextHeadCache(tmp_path).head(clip, CLASSES, TEMPLATES), head)
    monkeypatch.undo()
    other = tiny_clip(seed=9)  # another text tower: another key
    TextHeadCache(tmp_path).head(other, CLASSES, TEMPLATES)
    TextHeadCache(tmp_path).head(clip, CLASSES[:2], TEMPLATES)
    assert len(list((tmp_path / "heads").glob("*.pt"))) == 3
