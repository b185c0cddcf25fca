"""The command line: smoke runs of every command, and bad input -> one line, exit code 2."""

import json

import pytest
from PIL import Image

from mmt_ard.cli.main import main
from mmt_ard.training.finetune import FINETUNE_METHODS

EVAL = ["eval.limit=24", "eval.pgd.steps=1"]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_distill_cli_smoke(tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "distill",
        "--student",
        "mmt-rn-s",
        "--teacher-clean",
        "mmt-vit-s",
        "--teacher-adv",
        "mmt-vit-s",
        "--strategy",
        "static",
        "--output",
        str(tmp_path),
        "data=builtin:shapes:split=train,n=480",
        "optim.steps=3",
        "optim.batch_size=16",
        "attack.steps=1",
        "loop.eval_every=2",
        "loop.log_every=1",
        *EVAL,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["strategy"] == "static" and "acc" in summary["val"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3]
    for key in ("loss", "kl_clean", "kl_adv", "w_adv", "w_clean", "conf_adv", "conf_org", "lr", "images_per_s"):
        assert key in train[-1]
    assert any(r["split"] == "val" and r["step"] == 2 for r in rows)
    assert (tmp_path / "config.yaml").is_file() and list((tmp_path / "tb").iterdir())


@pytest.mark.parametrize("method", FINETUNE_METHODS.names())
def test_finetune_cli_every_method(tmp_path, capsys, method):
    code, out, err = run_cli(
        capsys,
        "finetune",
        "--method",
        method,
        "--model",
        "mmt-vit-s",
        "--output",
        str(tmp_path),
        "data=builtin:shapes:split=train,n=480",
        "optim.steps=2",
        "optim.batch_size=16",
        "attack.steps=1",
        *EVAL,
    )
    assert code == 0, err
    assert json.loads(out)["method"] == method
    assert (tmp_path / "model" / "open_clip_model.safetensors").is_file()


def test_pretrain_then_evaluate_cli(tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "pretrain",
        "--arch",
        "mmt-rn-s",
        "--output",
        str(tmp_path / "pt"),
        "data=builtin:captions:split=train,n=480",
        "optim.steps=2",
        "optim.batch_size=32",
        *EVAL,
    )
    assert code == 0, err
    code, out, err = run_cli(
        capsys,
        "evaluate",
        "--model",
        f"rn={tmp_path / 'pt' / 'model'}",
        "--model",
        "vit=mmt-vit-s",
        "--output",
        str(tmp_path / "ev"),
        "eval.limit=24",
        "eval.pgd.steps=1",
        "eval.zero_shot_eps=[1/255]",
    )
    assert code == 0, err
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert set(results) == {"rn", "vit"}
    r = results["rn"]
    assert set(r["racc"]) == {"1/255", "2/255", "3/255", "4/255"} and set(r["sum_acc"]) == set(r["racc"])
    assert set(r["zero_shot"]) == {"combos", "outlines"} and "zero_shot_racc" in r
    assert all(round(v, 2) == v for v in [r["acc"], *r["racc"].values()])
    md = (tmp_path / "ev" / "results.md").read_text()
    assert "| method | eps | acc | racc | sum-acc | clip-zero |" in md and "**Table 1: rn**" in out
    assert md.startswith("racc: per-sample worst case under `pgd` (PGD steps 1,")  # which protocol made the numbers


def _folder_with_text_file(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / cls / "a.png")
    (tmp_path / "imgs" / "cat" / "notes.txt").write_text("hello")
    return tmp_path / "imgs"


@pytest.mark.parametrize(
    "case, needle",
    [
        ("arch", "unknown model architecture"),
        ("dataset", "unknown built-in task"),
        ("eps", "eps must be in (0, 1]"),
        ("missing", "does not exist"),
        ("corrupt", "corrupt"),
        ("nonimage", "notes.txt"),
        ("override", "unknown config key"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, case, needle):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    model = {
        "arch": "nope-net",
        "missing": f"mmt-vit-s@{tmp_path / 'x.pt'}",
        "corrupt": f"mmt-vit-s@{tmp_path / 'bad.pt'}",
    }
    args = ["evaluate", "--model", "m=" + model.get(case, "mmt-vit-s"), "--output", str(tmp_path / "o"), "eval.limit=8"]
    if case == "dataset":
        args.append("eval.dataset=builtin:nope")
    if case == "eps":
        args.append("eval.eps=[2]")
    if case == "nonimage":
        args.append(f"eval.dataset=folder:{_folder_with_text_file(tmp_path)}:strict=true")  # lenient: left out
    if case == "override":
        args.append("eval.epz=1")
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.startswith("mmt-ard: error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_list_names_the_registries(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "confidence" in out and "pmg-aft" in out and "builtin:shapes" in out


def test_evaluate_takes_its_own_device_key_and_loop_device_has_moved(tmp_path, capsys, monkeypatch):
    args = ["evaluate", "--model", "m=mmt-vit-s", "--output", str(tmp_path / "o")]
    code, _, err = run_cli(capsys, *args, "loop.device=cpu")
    assert code == 2 and "config key 'loop' has moved: write 'device' instead" in err
    seen = []

    def fake(cfg):
        seen.append(cfg.device)
        (tmp_path / "o").mkdir(exist_ok=True)
        (tmp_path / "o" / "results.md").write_text("table")

    monkeypatch.setattr("mmt_ard.evaluation.run_evaluate", fake)
    assert run_cli(capsys, *args, "--device", "cpu")[0] == 0
    assert run_cli(capsys, *args, "device=cuda:1")[0] == 0 and run_cli(capsys, *args)[0] == 0
    assert seen == ["cpu", "cuda:1", "auto"]


def test_run_evaluate_from_python_leaves_its_config_alone(tmp_path):
    from mmt_ard.evaluation import EvalConfig, EvaluateConfig, ModelResult, PGDSettings, run_evaluate
    from mmt_ard.evaluation.run import state_key
    from mmt_ard.models import ModelSpec
    from mmt_ard.models.export import export_open_clip
    from tests.conftest import tiny_clip

    export_open_clip(tiny_clip("mmt-vit-s"), tmp_path / "student")
    ev = EvalConfig(eps=[1 / 255], pgd=PGDSettings(steps=1), limit=8, zero_shot=[], sanity=False)
    cfg = EvaluateConfig(
        models={"s": ModelSpec.parse(str(tmp_path / "student"))[1]}, output=str(tmp_path / "e"), eval=ev
    )
    key = state_key(cfg)
    results = run_evaluate(cfg)
    assert cfg.eval.state_dir is None and not (tmp_path / "e" / "autoattack-state").exists()
    assert isinstance(results["s"], ModelResult)
    assert json.loads((tmp_path / "e" / "results.json").read_text()) == {"s": results["s"].to_dict()}
    assert state_key(cfg) == key
    weights = next((tmp_path / "student").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b" ")  # other weights: an AutoAttack state must not resume
    assert state_key(cfg) != key
