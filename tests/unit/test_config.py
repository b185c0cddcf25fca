from dataclasses import dataclass, field

import pytest

from mmt_ard.config import from_dict, load_config, save_config, to_dict
from mmt_ard.distill.run import DistillConfig
from mmt_ard.errors import ConfigError
from mmt_ard.evaluation import EvalConfig


@dataclass
class Inner:
    eps: float = 0.1
    steps: int = 3
    name: str | None = None


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    flags: list[float] = field(default_factory=list)
    on: bool = False


def test_overrides_coerce_types_and_fractions():
    cfg = load_config(
        Outer, overrides=["inner.eps=2/255", "inner.steps=7", "on=true", "flags=[1/255, 0.5]", "inner.name=none"]
    )
    assert cfg.inner.eps == pytest.approx(2 / 255)
    assert cfg.inner.steps == 7 and cfg.on is True and cfg.inner.name is None
    assert cfg.flags == pytest.approx([1 / 255, 0.5])


@pytest.mark.parametrize(
    "override, message",
    [
        ("inner.epss=1", "inner.epss"),
        ("inner.steps=abc", "inner.steps"),
        ("on=maybe", "on"),
        ("noequals", "key.path=value"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, overrides=[override])


def test_preset_then_override_and_roundtrip(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("inner:\n  steps: 5\n  eps: 4/255\n")
    cfg = load_config(Outer, preset, ["inner.steps=6"])
    assert cfg.inner.steps == 6 and cfg.inner.eps == pytest.approx(4 / 255)
    save_config(cfg, tmp_path / "out.yaml")
    again = load_config(Outer, tmp_path / "out.yaml")
    assert to_dict(again) == to_dict(cfg)


def test_missing_preset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_distill_config_strategy_sections_are_typed():
    cfg = load_config(
        DistillConfig, overrides=["loss.strategy.name=static", "loss.strategy.static.a=0.25", "attack.eps=4/255"]
    )
    assert cfg.loss.strategy.static.a == 0.25 and cfg.attack.eps == pytest.approx(4 / 255)
    assert cfg.attack.objective == "embedding-l2"
    with pytest.raises(ConfigError, match="attack.objective"):
        load_config(DistillConfig, overrides=["attack.objective=nope"])
    assert from_dict(DistillConfig, to_dict(cfg)) == cfg


# loss.strategy as every run folder's config.yaml has recorded it: the sections are built from the strategy
# classes now, and a file written before must load to the same values (and be written back the same)
SAVED_STRATEGY = """
name: adaptive-norm
confidence: {slope: 5.0, offset: 1.0}
static: {a: 0.5}
adaptive_norm: {eta: 0.05, beta: 2.0}
released_code: {adv: 50.0, clean: 5.0}
"""


def test_a_saved_strategy_section_loads_and_is_written_back_the_same():
    import yaml

    saved = yaml.safe_load(SAVED_STRATEGY)
    cfg = load_config(DistillConfig, preset={"loss": {"strategy": saved}})
    assert (cfg.loss.strategy.adaptive_norm.eta, cfg.loss.strategy.adaptive_norm.beta) == (0.05, 2.0)
    assert to_dict(cfg)["loss"]["strategy"] == saved
    assert list(to_dict(cfg)["loss"]["strategy"]) == list(saved)  # the same order in config.yaml
    with pytest.raises(ConfigError, match="unknown config key 'loss.strategy.adaptive_nrom'"):
        load_config(DistillConfig, overrides=["loss.strategy.adaptive_nrom.eta=0.1"])


PRESETS = sorted((__import__("pathlib").Path(__file__).resolve().parents[2] / "src/mmt_ard/presets").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_presets_load_into_their_configs(preset, monkeypatch):
    from mmt_ard.evaluation import EvaluateConfig
    from mmt_ard.training.finetune import FinetuneConfig

    if preset.stem == "paper-eval":
        cfg = load_config(EvaluateConfig, preset)
        cfg.eval.validate()
        assert cfg.eval.attack == "pgd+autoattack" and cfg.eval.sections() == EvalConfig().sections()
        return
    cls = FinetuneConfig if "method:" in preset.read_text() else DistillConfig
    cfg = load_config(cls, preset)
    assert cfg.optim.steps == 5000 and cfg.loop.precision == "bf16"


def test_env_vars_in_paths_are_expanded_or_named(monkeypatch):
    from mmt_ard.config import expand_env

    monkeypatch.setenv("MMT_TEST_ROOT", "/data/x")
    assert expand_env("folder:${MMT_TEST_ROOT}/train") == "folder:/data/x/train"
    monkeypatch.delenv("MMT_TEST_ROOT")
    with pytest.raises(ConfigError, match="MMT_TEST_ROOT"):
        expand_env("folder:$MMT_TEST_ROOT/train")


def test_override_through_a_value_is_a_config_error():
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(Outer, overrides=["inner.eps.x=1"])


def test_flag_values_are_not_reparsed_as_yaml():
    cfg = load_config(Inner, values={"name": "010"})
    assert cfg.name == "010"


def test_model_argument_forms():
    from mmt_ard.models import ModelSpec

    assert ModelSpec.parse("a=ViT-B-32@openai,vision=/x/fare.pt") == (
        "a",
        ModelSpec("ViT-B-32", "openai", "/x/fare.pt"),
    )
    name, spec = ModelSpec.parse("RN50@/ck/r.pt")
    assert name == "RN50" and spec.pretrained == "/ck/r.pt" and spec.vision is None
