"""The path a real user takes: OpenAI weights build QuickGELU, paper presets, bf16 only where native."""

import json
import logging

import open_clip
import pytest
import torch
import yaml
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from mmt_ard import precision as prec
from mmt_ard.cli.common import PRESET_DIR
from mmt_ard.config import load_config
from mmt_ard.distill.run import DistillConfig
from mmt_ard.errors import UserError
from mmt_ard.models import ModelSpec, load_clip
from mmt_ard.models.export import export_open_clip
from mmt_ard.models.loading import resolve_arch, uses_quick_gelu
from mmt_ard.training.finetune import FinetuneConfig
from tests.conftest import tiny_clip


def activations(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))}


@pytest.fixture
def openai_standin(tmp_path, monkeypatch):
    """The ``openai`` download replaced by random ViT-B-32 weights saved here (nothing is downloaded)."""
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()}
    path = tmp_path / "vit-b-32-openai.safetensors"
    save_file(state, str(path))
    asked = []

    def download(cfg, cache_dir=None):
        asked.append(cfg)
        return str(path)

    monkeypatch.setattr(open_clip.factory, "download_pretrained", download)
    return state, asked


def test_openai_tag_builds_quickgelu_and_the_export_keeps_it(openai_standin, tmp_path):
    state, asked = openai_standin
    clip = load_clip(ModelSpec("ViT-B-32", "openai"))
    assert asked and asked[0].get("quick_gelu")  # the tag's own config was consulted
    assert clip.arch == "ViT-B-32-quickgelu"
    assert activations(clip.model) == {"QuickGELU"}  # vision and text towers
    assert all(torch.equal(v, state[k]) for k, v in clip.model.state_dict().items())
    export_open_clip(clip, tmp_path / "export")
    cfg = json.loads((tmp_path / "export" / "open_clip_config.json").read_text())
    assert cfg["arch"] == "ViT-B-32-quickgelu" and cfg["model_cfg"]["quick_gelu"] is True
    plain = open_clip.create_model("local-dir:" + str(tmp_path / "export"))  # open_clip alone
    assert activations(plain) == {"QuickGELU"}
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        ours = clip.encode_image(x)
        theirs = torch.nn.functional.normalize(plain.encode_image(clip.normalize_pixels(x)), dim=-1)
    assert torch.allclose(ours, theirs, atol=1e-5)
    with pytest.raises(UserError, match="exported as 'ViT-B-32-quickgelu'"):
        load_clip(ModelSpec("ViT-B-32", str(tmp_path / "export")))  # same keys, other activation: refused


def test_gelu_tags_and_local_files_keep_the_named_architecture(caplog, tmp_path):
    assert resolve_arch("ViT-B-32", "laion2b_s34b_b79k") == "ViT-B-32"  # trained with GELU
    assert resolve_arch("ViT-B-32-quickgelu", "openai") == "ViT-B-32-quickgelu"
    assert resolve_arch("RN50", "openai") == "RN50-quickgelu"
    assert resolve_arch("ViT-L-14", "openai") == "ViT-L-14-quickgelu"
    torch.save(tiny_clip().model.state_dict(), tmp_path / "w.pt")
    assert resolve_arch("ViT-B-32", str(tmp_path / "w.pt")) == "ViT-B-32"  # a file cannot say: the user decides
    # does not fit, but the warning about the activation comes first
    with caplog.at_level(logging.WARNING, logger="mmt_ard"), pytest.raises(UserError):
        load_clip(ModelSpec("ViT-B-32", str(tmp_path / "w.pt")))
    assert "ViT-B-32-quickgelu" in caplog.text


PRESET_ENV = {"IMAGENET_ROOT": "/data/imagenet", "CLEAN_TEACHER": "/ckpt/clean.pt", "ADV_TEACHER": "/ckpt/adv.pt"}


TRAINING_PRESETS = sorted(p.stem for p in PRESET_DIR.glob("paper-*.yaml") if p.stem != "paper-eval")  # eval: no models


@pytest.mark.parametrize("preset", TRAINING_PRESETS)
def test_every_paper_preset_builds_quickgelu_models(preset, monkeypatch):
    for key, value in PRESET_ENV.items():
        monkeypatch.setenv(key, value)
    cls = FinetuneConfig if preset == "paper-adv-teacher" else DistillConfig
    cfg = load_config(cls, PRESET_DIR / f"{preset}.yaml")
    specs = [cfg.model] if cls is FinetuneConfig else [cfg.student, cfg.teacher_clean, cfg.teacher_adv]
    for spec in specs:
        assert spec.arch.endswith("-quickgelu"), f"{preset}: {spec.arch} would build GELU"
        assert uses_quick_gelu(resolve_arch(spec.arch, spec.pretrained))
    assert cfg.loop.precision == "bf16"  # asked for; falls back where not native (below)


@pytest.mark.parametrize(
    ("native", "force", "expected"),
    [(False, False, "fp32"), (False, True, "bf16"), (True, False, "bf16")],
)
def test_bf16_only_where_the_cpu_runs_it_natively(monkeypatch, caplog, native, force, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with caplog.at_level(logging.WARNING, logger="mmt_ard"):
        assert prec.effective_precision("bf16", torch.device("cpu"), force_bf16=force) == expected
        assert prec.effective_precision("fp32", torch.device("cpu"), force_bf16=force) == "fp32"
    assert ("no native bf16" in caplog.text) == (expected == "fp32")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # AMX alone is enough
    assert prec.bf16_native(torch.device("cpu"))


def test_a_bf16_run_on_a_cpu_without_bf16_trains_in_float32(monkeypatch, tmp_path):
    from mmt_ard.distill.run import run_distill

    monkeypatch.setattr(prec, "bf16_native", lambda device: False)
    seen = []
    monkeypatch.setattr("mmt_ard.distill.task.pgd", _recording_pgd(seen))
    cfg = load_config(
        DistillConfig,
        overrides=[
            "data=builtin:shapes:split=train,n=64",
            "student.arch=mmt-vit-s",
            "teacher_clean.arch=mmt-vit-s",
            "teacher_adv.arch=mmt-vit-s",
            "optim.steps=1",
            "optim.batch_size=8",
            "attack.steps=1",
            "eval.limit=8",
            "eval.pgd.steps=1",
            "loop.precision=bf16",
            f"output={tmp_path}",
        ],
    )
    run_distill(cfg)
    assert seen == ["fp32"]  # the inner attack ran in float32
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["config"]["loop"]["precision"] == "fp32"  # the run folder says what ran
    env = saved["environment"]  # and where, with which packages
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] and "open_clip_torch" in env["packages"]


def _recording_pgd(seen):
    from mmt_ard.attacks import pgd

    def wrapped(*args, precision="fp32", **kwargs):
        seen.append(precision)
        return pgd(*args, precision=precision, **kwargs)

    return wrapped
