"""LoRA students: attention split into linears (exact), dropout that acts, exact merge back."""

import open_clip
import pytest
import torch
from torch import nn

from mmt_ard.distill import LoraConfig, apply_lora, merged_copy
from mmt_ard.distill.attention import SplitAttention
from mmt_ard.models.export import export_open_clip
from tests.conftest import tiny_clip


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", ["none", "bool", "float", "padding"])
def test_split_attention_computes_what_multihead_attention_computes(batch_first, mask):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    with torch.no_grad():
        mha.in_proj_bias.normal_()  # PyTorch zero-inits biases: make a swapped q/k/v bias visible
        mha.out_proj.bias.normal_()
    split = SplitAttention(mha).eval()
    b, n = 3, 5
    x = torch.randn((b, n, 16) if batch_first else (n, b, 16))
    kwargs = {}
    if mask == "bool":
        kwargs["attn_mask"] = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    elif mask == "float":
        kwargs["attn_mask"] = torch.randn(n, n)
    elif mask == "padding":
        kwargs["key_padding_mask"] = torch.tensor([[False] * n, [False] * (n - 2) + [True] * 2, [False] * n])
    expected = mha(x, x, x, need_weights=False, **kwargs)[0]
    got = split(x, x, x, need_weights=False, **kwargs)[0]
    assert torch.allclose(got, expected, atol=1e-6)
    back = split.to_multihead().eval()
    assert torch.equal(back.in_proj_weight, mha.in_proj_weight) and torch.equal(back.in_proj_bias, mha.in_proj_bias)


def lora_vit(dropout: float, rank: int = 4):
    clip = tiny_clip("mmt-vit-s", seed=2)
    clip.model.requires_grad_(False)
    apply_lora(clip, LoraConfig(enabled=True, rank=rank, alpha=rank, dropout=dropout))
    with torch.no_grad():  # peft zero-inits B: give the adapters an effect
        for name, p in clip.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    return clip


def test_lora_dropout_acts_in_train_mode_only():
    clip = lora_vit(dropout=0.9)
    x = torch.rand(4, 3, 32, 32)
    clip.train()
    assert not torch.allclose(clip.encode_image(x), clip.encode_image(x))  # dropout draws differ
    clip.eval()
    assert torch.equal(clip.encode_image(x), clip.encode_image(x))
    plain = lora_vit(dropout=0.0).train()
    assert torch.equal(plain.encode_image(x), plain.encode_image(x))  # no other randomness in the tower


def test_adapters_sit_on_every_attention_projection_and_all_get_gradients():
    clip = lora_vit(dropout=0.1).train()
    names = [n for n, p in clip.named_parameters() if p.requires_grad]
    blocks = len(clip.model.visual.base_model.model.transformer.resblocks)
    assert len(names) == blocks * 4 * 2  # q, k, v, out x (A, B)
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert any(f"attn.{proj}.lora_A" in n for n in names)
    clip.encode_image(torch.rand(4, 3, 32, 32)).pow(2).sum().backward()
    grads = {n: p.grad for n, p in clip.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), [n for n, g in grads.items() if g is None]
    assert all(p.grad is None for n, p in clip.named_parameters() if not p.requires_grad)


def test_merged_export_is_plain_open_clip_and_equals_the_adapter_model(tmp_path):
    clip = lora_vit(dropout=0.5).eval()
    x = torch.rand(4, 3, 32, 32)
    merged = merged_copy(clip).eval()
    assert not any(isinstance(m, SplitAttention) for m in merged.modules())
    assert sum(isinstance(m, nn.MultiheadAttention) for m in merged.visual.modules()) == len(
        merged.visual.transformer.resblocks
    )
    with torch.no_grad():
        assert torch.allclose(clip.encode_image(x), merged.encode_image(x), atol=1e-5)
        with clip.model.visual.disable_adapter():
            base = clip.encode_image(x)
        assert not torch.allclose(base, merged.encode_image(x), atol=1e-3)  # the adapters did something
    export_open_clip(merged, tmp_path / "student")
    from mmt_ard.models import register_archs

    register_archs()
    plain = open_clip.create_model("local-dir:" + str(tmp_path / "student")).eval()
    with torch.no_grad():
        theirs = nn.functional.normalize(plain.encode_image(merged.normalize_pixels(x)), dim=-1)
    assert torch.allclose(theirs, merged.encode_image(x), atol=1e-6)
