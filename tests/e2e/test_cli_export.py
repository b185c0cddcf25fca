"""`mmt-ard export` and the attack flags of `mmt-ard evaluate`, end to end on tiny models."""

import json

from transformers import CLIPVisionModel

from mmt_ard.cli.main import main
from mmt_ard.models.export import export_open_clip
from tests.conftest import tiny_clip


def _run_folder(tmp_path, arch):
    export_open_clip(tiny_clip(arch), tmp_path / "run" / "student")
    return tmp_path / "run"


def test_export_a_run_folder_to_hf(tmp_path, capsys):
    run = _run_folder(tmp_path, "mmt-vit-s")
    assert main(["export", str(run), "--format", "hf", "--output", str(tmp_path / "hf")]) == 0
    assert "wrote hf export" in capsys.readouterr().out
    assert CLIPVisionModel.from_pretrained(tmp_path / "hf").config.num_hidden_layers == 3
    assert json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())["crop_size"]["height"] == 32


def test_export_errors_are_one_line_exit_2(tmp_path, capsys):
    run = _run_folder(tmp_path, "mmt-rn-s")
    assert main(["export", str(run), "--format", "hf", "--output", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmt-ard: error: cannot convert 'mmt-rn-s'") and err.count("\n") == 1
    assert main(["export", str(run), "--format", "onnx", "--output", str(tmp_path / "x")]) == 2
    assert "unknown export format 'onnx'" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--format", "open_clip", "--output", str(tmp_path / "y")]) == 2
    assert "neither an export folder" in capsys.readouterr().err


def test_export_arch_at_weights_to_vision_state_dict(tmp_path, capsys):
    run = _run_folder(tmp_path, "mmt-rn-s")
    src = f"mmt-rn-s@{run / 'student'}"
    assert main(["export", src, "--format", "vision-state-dict", "--output", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "vision_encoder.pt").is_file()
    assert main(["export", src, "--format", "vision-state-dict", "--output", str(tmp_path / "v")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_evaluate_with_autoattack_writes_flags_and_cleans_its_state(tmp_path, capsys):
    run = _run_folder(tmp_path, "mmt-vit-s")
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            "--model",
            f"m={run / 'student'}",
            "--output",
            str(out),
            "--attack",
            "pgd+apgd-ce+apgd-t",
            "--eps",
            "1/255,4/255",
            "--steps",
            "2",
            "--apgd-iterations",
            "3",
            "--target-classes",
            "2",
            "--limit",
            "48",
            "eval.zero_shot=[]",
            "eval.sanity_samples=8",
        ]
    )
    assert code == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())["m"]
    assert res["attack"] == "pgd+apgd-ce+apgd-t" and set(res["racc"]) == {"1/255", "4/255"}
    assert [a["iterations"] for a in res["protocol"]["chain"][1]["attacks"]] == [3]  # the flags reached both
    assert res["protocol"]["chain"][2]["attacks"][0] | {"source": ""} == {
        "attack": "apgd-t",
        "iterations": 3,
        "restarts": 1,
        "targets": 2,
        "source": "",
    }
    assert {"monotone_in_eps", "autoattack_not_weaker"} <= set(res["sanity"])
    assert "**Sanity checks (gradient masking, weak attacks)**" in capsys.readouterr().out
    assert not (out / "autoattack-state").exists()


def test_list_names_attacks_and_export_formats(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "apgd-ce, apgd-t, autoattack, autoattack-standard, fab-t, pgd, square" in out
    assert "hf, open_clip, vision-state-dict" in out
