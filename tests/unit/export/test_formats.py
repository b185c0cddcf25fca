"""Exports: the transformers CLIP vision model computes our function layer by layer; vision state dicts round-trip."""

import json

import open_clip
import pytest
import torch

from mmt_ard.errors import UserError
from mmt_ard.export import EXPORT_FORMATS, VISION_WEIGHTS, check_convertible, export_model, to_hf_vision_model
from mmt_ard.models import ModelSpec, PixelCLIP, load_clip
from tests.conftest import tiny_clip


def _vit(quick_gelu: bool, seed: int = 0) -> PixelCLIP:
    """A random mmt-vit-s with every weight jittered, so a swapped norm or q/k/v slice cannot hide."""
    torch.manual_seed(seed)
    model = open_clip.create_model("mmt-vit-s", force_quick_gelu=quick_gelu)
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(0.1 * torch.randn_like(p))
    pre = open_clip.get_model_preprocess_cfg(model)
    return PixelCLIP(model, "mmt-vit-s", pre["mean"], pre["std"], 32).eval()


def _our_hidden_states(clip: PixelCLIP, x: torch.Tensor) -> list[torch.Tensor]:
    """ln_pre output and every resblock's output, as open_clip computes them (hooks)."""
    states: list[torch.Tensor] = []
    visual = clip.visual
    hooks = [visual.ln_pre.register_forward_hook(lambda m, i, o: states.append(o))]
    hooks += [b.register_forward_hook(lambda m, i, o: states.append(o)) for b in visual.transformer.resblocks]
    try:
        clip.encode_image(x, normalize=False)
    finally:
        for h in hooks:
            h.remove()
    return states


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quick_gelu"])
def test_hf_vision_model_matches_every_layer(quick_gelu):
    clip = _vit(quick_gelu)
    assert check_convertible(clip.visual, clip.arch)["hidden_act"] == ("quick_gelu" if quick_gelu else "gelu")
    hf = to_hf_vision_model(clip)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = _our_hidden_states(clip, x)
        out = hf(pixel_values=clip.normalize_pixels(x), output_hidden_states=True)
        ref = clip.encode_image(x, normalize=False)
    assert len(out.hidden_states) == len(ours) == 4  # embeddings + 3 layers
    for i, (a, b) in enumerate(zip(out.hidden_states, ours)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"hidden state {i}")
    torch.testing.assert_close(out.image_embeds, ref, atol=1e-5, rtol=1e-5)


def test_hf_export_folder_loads_as_llava_does(tmp_path):
    from transformers import CLIPImageProcessor, CLIPVisionModel

    clip = _vit(quick_gelu=True)
    export_model(clip, tmp_path / "hf", "hf")
    tower = CLIPVisionModel.from_pretrained(tmp_path / "hf").eval()  # what LLaVA-1.5 calls
    proc = CLIPImageProcessor.from_pretrained(tmp_path / "hf")
    assert proc.crop_size["height"] == 32 and proc.image_mean == pytest.approx(clip.mean.flatten().tolist())
    assert tower.config.hidden_act == "quick_gelu"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        penultimate = tower(pixel_values=clip.normalize_pixels(x), output_hidden_states=True).hidden_states[-2]
        ours = _our_hidden_states(clip, x)[-2]
    torch.testing.assert_close(penultimate, ours, atol=1e-5, rtol=1e-5)
    assert not list(tmp_path.glob("hf/.hf-*"))  # no temporary folder left behind


def test_resnet_is_refused_with_a_clear_message(tmp_path):
    clip = tiny_clip("mmt-rn-s")
    with pytest.raises(UserError, match="ModifiedResNet.*--format open_clip"):
        export_model(clip, tmp_path / "hf", "hf")
    assert not (tmp_path / "hf").exists()  # refused before writing anything


def test_unexpressible_vit_settings_are_refused():
    clip = _vit(quick_gelu=False)
    clip.visual.final_ln_after_pool = True
    with pytest.raises(UserError, match="final_ln_after_pool"):
        check_convertible(clip.visual, clip.arch)
    clip = _vit(quick_gelu=False)
    clip.visual.transformer.resblocks[1].mlp.gelu = torch.nn.GELU(approximate="tanh")
    with pytest.raises(UserError, match="activation"):
        check_convertible(clip.visual, clip.arch)


def test_vision_state_dict_round_trips_through_our_loader(tmp_path):
    clip = _vit(quick_gelu=False, seed=3)
    path = export_model(clip, tmp_path / "v", "vision-state-dict")
    assert path.name == VISION_WEIGHTS
    state = torch.load(path, weights_only=True)
    assert "conv1.weight" in state and not any(k.startswith("visual.") for k in state)  # the FARE/TeCoA layout
    back = load_clip(ModelSpec("mmt-vit-s", vision=str(path)))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.encode_image(x), clip.encode_image(x))
    assert json.loads((tmp_path / "v" / "vision_info.json").read_text())["arch"] == "mmt-vit-s"


def test_open_clip_export_and_registry_names(tmp_path):
    assert EXPORT_FORMATS.names() == ["hf", "open_clip", "vision-state-dict"]
    clip = tiny_clip("mmt-rn-s")
    export_model(clip, tmp_path / "oc", "open_clip")
    back = load_clip(ModelSpec("mmt-rn-s", pretrained=str(tmp_path / "oc")))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.encode_image(x), clip.encode_image(x))


def _load_open_clip(folder, clip):
    back = load_clip(ModelSpec(clip.arch, pretrained=str(folder)))
    return lambda x: back.encode_image(x, normalize=False)


def _load_vision_state_dict(folder, clip):
    back = load_clip(ModelSpec(clip.arch, vision=str(folder / VISION_WEIGHTS)))
    return lambda x: back.encode_image(x, normalize=False)


def _load_hf(folder, clip):
    from transformers import CLIPVisionModelWithProjection

    tower = CLIPVisionModelWithProjection.from_pretrained(folder).eval()
    return lambda x: tower(pixel_values=clip.normalize_pixels(x)).image_embeds


# How a user loads each format back: a new entry of EXPORT_FORMATS fails the test below until it has a loader here.
LOADERS = {"open_clip": _load_open_clip, "vision-state-dict": _load_vision_state_dict, "hf": _load_hf}


@pytest.mark.parametrize("fmt", EXPORT_FORMATS.names())
def test_every_export_format_loads_back_to_the_same_image_embedding(fmt, tmp_path):
    assert fmt in LOADERS, f"export format {fmt!r} has no loader in LOADERS: say how a user loads it back"
    clip = _vit(quick_gelu=False, seed=5)  # jittered weights: a dropped or transposed tensor changes the embedding
    export_model(clip, tmp_path / fmt, fmt)
    encode = LOADERS[fmt](tmp_path / fmt, clip)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(encode(x), clip.encode_image(x, normalize=False), atol=1e-5, rtol=1e-5)
