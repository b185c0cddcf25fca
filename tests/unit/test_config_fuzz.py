"""Random configurations and override strings: accepted, or refused with one line; never a traceback."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmt_ard.distill.run as distill_run
from mmt_ard.cli.main import main


class Validated(Exception):
    """Raised where models would be built: everything before it accepted the configuration."""


KEYS = [
    "optim.lr",
    "optim.steps",
    "optim.batch_size",
    "optim.warmup",
    "attack.eps",
    "attack.steps",
    "attack.step_size",
    "attack.random_start",
    "attack.objective",
    "attack.norm",
    "loss.lambda_adv",
    "loss.gamma",
    "loss.temperature",
    "loss.strategy.name",
    "loss.strategy.static.a",
    "loss.strategy.confidence.slope",
    "loss.strategy.adaptive_norm.eta",
    "eval.eps",
    "eval.limit",
    "eval.pgd.steps",
    "eval.attack",
    "lora.rank",
    "lora.dropout",
    "lora.enabled",
    "loop.precision",
    "loop.select",
    "loop.max_nonfinite",
    "student.arch",
    "data",
    "attack",
    "loss",
    "optim.lr.x",
    "nope",
]
VALUES = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(
        [
            "2/255",
            "1/0",
            "-1/255",
            "[1/255, 2/255]",
            "[a",
            "{x: 1}",
            "none",
            "true",
            "static",
            "confidence",
            "ce",
            "l2",
            "bf16",
            "",
            "~",
            "!!python/object:os.system",
            "1e999",
        ]
    ),
    st.text(max_size=12),
)
OVERRIDES = st.lists(
    st.one_of(st.tuples(st.sampled_from(KEYS), VALUES).map("=".join), st.text(max_size=20)), max_size=4
)


@pytest.fixture
def stop_before_models(monkeypatch):
    def build_task(*args, **kwargs):
        raise Validated

    monkeypatch.setattr(distill_run, "build_task", build_task)


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(overrides=OVERRIDES)
def test_random_overrides_are_accepted_or_refused_in_one_line(overrides, stop_before_models, tmp_path, capsys):
    capsys.readouterr()  # hypothesis reuses the fixture across examples
    base = ["data=builtin:shapes:split=train,n=64", "eval.dataset=builtin:shapes:split=val,n=32", "eval.zero_shot=[]"]
    try:
        code = main(["distill", "--output", str(tmp_path / "never"), *base, *overrides])
    except Validated:
        return  # accepted: the models would be built now
    except SystemExit as e:  # argparse: an override that looks like a flag
        assert e.code == 2
        return
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("mmt-ard:")]  # besides INFO log lines
    assert code == 2 and len(ours) == 1 and ours[0].startswith("mmt-ard: error:") and "Traceback" not in err, err
    assert not (tmp_path / "never").exists()  # refused before anything was written


def test_unknown_keys_suggest_the_closest_one(capsys):
    assert main(["distill", "optim.lrr=1e-4"]) == 2
    assert "Did you mean 'optim.lr'?" in capsys.readouterr().err


def test_a_strategys_options_given_to_another_strategy_are_refused(capsys, stop_before_models):
    assert main(["distill", "loss.strategy.name=static", "loss.strategy.confidence.slope=3"]) == 2
    assert "loss.strategy.confidence options are set but the strategy is 'static'" in capsys.readouterr().err
    assert main(["finetune", "--method", "tecoa", "fare.normalize_embeddings=false"]) == 2
    assert "fare.* options" in capsys.readouterr().err
