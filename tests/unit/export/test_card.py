"""Model cards: every export format carries a Hugging Face README.md whose numbers are the results file's."""

import json

import pytest

from mmt_ard.cli.main import main
from mmt_ard.config import save_config
from mmt_ard.distill.run import DistillConfig
from mmt_ard.export import EXPORT_FORMATS
from mmt_ard.export.card import LIBRARY, read_card
from mmt_ard.models import ModelSpec
from mmt_ard.models.export import export_open_clip
from tests.conftest import tiny_clip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished distillation run folder of a tiny ViT (config, summary, student) and its evaluation."""
    root = tmp_path_factory.mktemp("card")
    run = root / "distill-vit"
    export_open_clip(tiny_clip("mmt-vit-s"), run / "student")
    cfg = DistillConfig(
        student=ModelSpec("mmt-vit-s", "openai"),
        teacher_clean=ModelSpec("mmt-vit-t", "clean.pt"),
        teacher_adv=ModelSpec("mmt-vit-t", "adv.pt"),
        output=str(run),
    )
    save_config(cfg, run / "config.yaml", extra={"version": {"mmt_ard": "test"}})  # as a run writes it
    (run / "summary.json").write_text(json.dumps({"val": {"acc": 41.5, "racc/2/255": 30.25, "sum_acc/2/255": 71.75}}))
    args = [
        "evaluate",
        "--model",
        f"student={run / 'student'}",
        "--output",
        str(root / "eval"),
        "--attack",
        "pgd+apgd-ce",
        "--eps",
        "1/255,2/255",
        "--limit",
        "12",
        "--steps",
        "1",
        "--apgd-iterations",
        "2",
        "--",
        "eval.zero_shot=[]",
        "eval.sanity=false",
        "eval.apgd_ce.restarts=1",
    ]
    assert main(args) == 0
    return run, root / "eval" / "results.json"


@pytest.mark.parametrize("fmt", EXPORT_FORMATS.names())
def test_every_export_carries_a_card_with_the_results_numbers(run, fmt, tmp_path):
    folder, results = run
    out = tmp_path / fmt
    assert main(["export", str(folder), "--format", fmt, "--output", str(out), "--results", str(results)]) == 0
    meta, body = read_card(out / "README.md")
    res = json.loads(results.read_text())["student"]
    assert meta["library_name"] == LIBRARY[fmt] and "adversarial-robustness" in meta["tags"]
    assert "base_model" not in meta and "Student: `mmt-vit-s@openai`" in body  # a tag is no Hub id
    assert meta["datasets"] == [DistillConfig.data]
    (entry,) = meta["model-index"][0]["results"]
    metrics = {m["name"]: m["value"] for m in entry["metrics"]}
    assert metrics == {
        "clean accuracy": res["acc"],
        **{f"robust accuracy (pgd+apgd-ce, Linf eps {e})": v for e, v in res["racc"].items()},
    }
    assert entry["dataset"]["name"] == res["dataset"]
    assert f"| 2/255 | {res['acc']:.2f} | {res['racc']['2/255']:.2f} |" in body
    assert res["protocol"]["summary"] in body and "Eps range: 1/255 to 2/255." in body
    assert "mmt-vit-t@adv.pt" in body and "weighting `confidence`" in body and "mmt_ard" in body


def test_without_results_the_card_carries_the_runs_last_validation(run, tmp_path):
    folder, _ = run
    assert main(["export", str(folder), "--format", "open_clip", "--output", str(tmp_path / "o")]) == 0
    meta, body = read_card(tmp_path / "o" / "README.md")
    values = [m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]]
    assert values == [41.5, 30.25]  # summary.json's val, nothing recomputed
    assert "`pgd`" in body and "the run's last validation" in body


def test_the_card_of_a_selected_step_carries_that_steps_validation(run, tmp_path):
    """With loop.select the exported model is an earlier step's: its row of metrics.jsonl, not the last."""
    folder, _ = run
    summary = json.loads((folder / "summary.json").read_text())
    (folder / "metrics.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"step": 5, "split": "val", "acc": 50.0, "racc/2/255": 40.0},
                {"step": 10, "split": "val", "acc": 41.5, "racc/2/255": 30.25},
            ]
        )
    )
    (folder / "summary.json").write_text(json.dumps({**summary, "selected": {"step": 5, "metric": "acc"}}))
    try:
        assert main(["export", str(folder), "--format", "open_clip", "--output", str(tmp_path / "o")]) == 0
    finally:
        (folder / "summary.json").write_text(json.dumps(summary))
    meta, body = read_card(tmp_path / "o" / "README.md")
    assert [m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]] == [50.0, 40.0]
    assert "the validation of step 5" in body


def test_hub_ids_alone_become_base_model(tmp_path):
    from mmt_ard.export.card import base_model

    assert base_model({"student": {"pretrained": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"}}) == (
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    )
    assert base_model({"student": {"pretrained": "hf-hub:org/name"}}) == "org/name"
    (tmp_path / "runs").mkdir()
    assert base_model({"student": {"pretrained": "openai"}}) is None
    assert base_model({"student": {"pretrained": str(tmp_path / "runs")}}) is None  # a local folder


def test_a_bad_results_file_fails_before_anything_is_written(run, tmp_path, capsys):
    folder, results = run
    out = tmp_path / "x"
    assert (
        main(["export", str(folder), "--format", "open_clip", "--output", str(out), "--results", f"{results}:nobody"])
        == 2
    )
    assert "has no model 'nobody'; it has student" in capsys.readouterr().err and not out.exists()
