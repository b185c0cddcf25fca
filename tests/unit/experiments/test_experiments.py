"""`mmt-ard experiment`: paired-seed statistics, the tables, the paper preset's checks, and every
experiment's builtin preset end to end on a smoke-sized world (CI's smoke of each experiment)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from mmt_ard.cli.main import main
from mmt_ard.demo import DemoPlan
from mmt_ard.errors import UserError
from mmt_ard.experiments.base import comparison_table
from mmt_ard.experiments.efficiency import first_reaching
from mmt_ard.experiments.presets import ZERO_SHOT_SUITE, PaperInputs, paper_preset
from mmt_ard.experiments.runner import EXPERIMENTS
from mmt_ard.experiments.stats import SIGNIFICANT, paired_difference, summarize
from tests.conftest import smoke_plan


def test_paired_difference_uses_the_per_seed_differences_and_two_standard_errors():
    # every seed gains exactly 1: significant although the seeds spread widely (an unpaired test would not see it)
    d = paired_difference([10.0, 20.0, 30.0], [9.0, 19.0, 29.0])
    assert d.mean == pytest.approx(1.0) and d.se == pytest.approx(0.0) and d.significant
    # differences 1, 0, 2: mean 1, SE 1/sqrt(3) = 0.577; 1 < 2 SE = 1.155 -> not significant (1 SE would say yes)
    d = paired_difference([1.0, 0.0, 2.0], [0.0, 0.0, 0.0])
    assert d.se == pytest.approx(1 / math.sqrt(3)) and not d.significant
    # differences 3, 2, 4: mean 3 > 2 * 0.577
    assert paired_difference([3.0, 2.0, 4.0], [0.0, 0.0, 0.0]).significant
    # the sign does not matter, a single seed never is significant
    assert paired_difference([0.0, 0.0, 0.0], [3.0, 2.0, 4.0]).significant
    assert not paired_difference([5.0], [0.0]).significant
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
    s = summarize([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3) and s.std == pytest.approx(
        math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )


def _scores(acc: list[float], racc: list[float]) -> list[dict[str, float]]:
    return [{"acc": a, "racc/2/255": r, "sum_acc/2/255": a + r} for a, r in zip(acc, racc)]


def test_comparison_table_marks_only_significant_paired_differences():
    rows = {
        "ref": _scores([30, 40, 50], [20, 20, 20]),
        "better": _scores([31, 41, 51], [21, 21.5, 21.2]),  # +1 acc every seed: significant
        "noisy": _scores([33, 38, 51], [20, 20, 20]),
    }  # +3, -2, +1 acc: not significant
    table = comparison_table("t", "T", rows, "ref")
    by_label = {row[0]: row for row in table["rows"]}
    assert by_label["better"][1]["mark"] == SIGNIFICANT and by_label["better"][1]["mean"] == pytest.approx(41.0)
    assert "mark" not in by_label["noisy"][1]
    assert "mark" not in by_label["ref"][1] and by_label["ref"][-1] == "reference"
    assert by_label["better"][-1].startswith("+2.23 ± ") and by_label["better"][-1].endswith(SIGNIFICANT)
    assert by_label["better"][1]["std"] == pytest.approx(10.0)  # the std is over seeds, the mark from the pairs


def test_first_reaching_finds_the_first_validation_at_or_above_the_target():
    rows = [{"step": 10, "v": 1.0}, {"step": 20, "v": 3.0}, {"step": 30, "v": 2.0}, {"step": 40, "v": 5.0}]
    assert first_reaching(rows, "v", 3.0)["step"] == 20
    assert first_reaching(rows, "v", 4.0)["step"] == 40
    assert first_reaching(rows, "v", 6.0) is None


def test_the_paper_preset_names_every_missing_input(tmp_path, capsys):
    with pytest.raises(UserError) as e:
        paper_preset(PaperInputs(teacher_clean=str(tmp_path / "nope.pt"), imagenet=str(tmp_path)))
    msg = str(e.value)
    assert "--teacher-clean" in msg and "--teacher-adv is required" in msg and "no train/ folder" in msg
    assert main(["experiment", "table1", "--preset", "paper"]) == 2
    assert "--imagenet is required" in capsys.readouterr().err
    assert main(["experiment", "table9"]) == 2
    assert "unknown experiment 'table9'" in capsys.readouterr().err


def _paper_inputs(tmp_path: Path) -> PaperInputs:
    for split in ("train", "val", "holdout"):
        (tmp_path / "imagenet" / split).mkdir(parents=True)
    for name in ZERO_SHOT_SUITE:
        (tmp_path / "zs" / name.replace("/", "_")).mkdir(parents=True)
    (tmp_path / "clean.pt").write_bytes(b"x")
    (tmp_path / "adv.pt").write_bytes(b"x")
    return PaperInputs(
        str(tmp_path / "clean.pt"), str(tmp_path / "adv.pt"), str(tmp_path / "imagenet"), str(tmp_path / "zs")
    )


def test_the_paper_preset_runs_up_to_the_first_distillation(tmp_path, monkeypatch):
    """Every paper experiment plans its runs from the shipped presets with the user's paths; the first
    distillation is where real weights would be loaded, so the test stops there."""
    from mmt_ard.experiments import store

    preset = paper_preset(_paper_inputs(tmp_path))
    assert set(preset.students) == {"vit-b32", "rn50", "rn101", "vit-b32-lora"}
    assert preset.students["vit-b32-lora"].lora.enabled and preset.ablation_student == "vit-b32"
    assert len(preset.test_eval.zero_shot) == len(ZERO_SHOT_SUITE) and preset.test_eval.attack == "pgd+autoattack"
    seen = []

    class Stop(Exception):
        pass

    def fake_distill(self, label, cfg):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(store.RunStore, "distill", fake_distill)
    from mmt_ard.experiments.runner import run_experiment

    for name in EXPERIMENTS:
        with pytest.raises(Stop):
            run_experiment(name, preset, [0, 1, 2], tmp_path / "out")
    for cfg in seen:
        assert cfg.student.arch.endswith("-quickgelu") and cfg.teacher_adv.arch == "ViT-L-14-quickgelu"
        assert cfg.teacher_clean.pretrained == str(tmp_path / "clean.pt")
        assert cfg.teacher_adv.vision == str(tmp_path / "adv.pt")
        assert cfg.data.startswith(f"folder:{tmp_path / 'imagenet'}:split=train")
        assert cfg.optim.lr == 2e-5 and cfg.optim.steps == 5000 and cfg.loop.seed == 0
    assert [c.loss.strategy.name for c in seen[:3]] == ["adv-only", "adv-only", "adv-only"]  # table1-3 baselines
    assert seen[0].loss.gamma == 0.0 and seen[1].loss.gamma == 1.0  # Table 1's baseline drops the cross-modal term


def test_every_experiment_runs_end_to_end_on_the_builtin_world(smoke_world, tmp_path, monkeypatch):
    """`mmt-ard experiment all --quick` (smoke-sized, on the world the demo test shares): every experiment
    writes its tables, figures and results.json; a run two experiments need is trained once; a second
    seed pairs with the first; the report renders them all."""
    monkeypatch.setattr(DemoPlan, "quick", staticmethod(smoke_plan))
    # the sweeps at two points each (their full lists are planned in the paper-preset test)
    monkeypatch.setattr("mmt_ard.experiments.tables.TABLE4_RATIOS", ((1.0, 0.5), (3.0, 0.5)))
    monkeypatch.setattr("mmt_ard.experiments.tables.DIW_SWEEP", ((5.0, 1.0), (1.0, 1.0)))
    from mmt_ard.experiments import analyses

    attacked = []  # the architecture each analysis PGD attacks
    adversarial = analyses._adversarial
    monkeypatch.setattr(
        analyses, "_adversarial", lambda clf, *a, **k: attacked.append(clf.clip.arch) or adversarial(clf, *a, **k)
    )
    common = ["--quick", "--students", "vit-s", "--world", str(smoke_world), "--output", str(tmp_path)]
    assert main(["experiment", "all", "--seeds", "1", *common]) == 0
    # Grad-CAM's x' is made against the adversarial teacher (ViT-T here), the bound's against the student (ViT-S)
    assert sorted(set(attacked)) == ["mmt-vit-s", "mmt-vit-t"]
    notes = json.loads((tmp_path / "gradcam" / "results.json").read_text())["tables"][0]["notes"][0]
    assert "against the adversarial teacher itself" in notes
    trained = {}
    for name in EXPERIMENTS:
        res = json.loads((tmp_path / name / "results.json").read_text())
        assert res["kind"] == "mmt-ard-experiment" and res["seeds"] == [0] and res["tables"], name
        for fig in res["figures"]:
            assert (tmp_path / name / fig["path"]).stat().st_size > 5000, (name, fig)
        assert (tmp_path / name / "tables.md").read_text().count("|") > 10
        trained[name] = res["runs_trained"]
    # Table 2's weighted row and Table 3's confidence row are Table 1's MMT-ARD run: not trained again
    assert trained == {
        "table1": 2,
        "table2": 2,
        "table3": 2,
        "table4": 1,
        "components": 1,
        "released-code": 1,
        "gradcam": 0,
        "bound": 0,
        "dynamic-weights": 1,
        "efficiency": 2,
    }
    eff = json.loads((tmp_path / "efficiency" / "results.json").read_text())
    assert len(eff["data"]["curves"]["baseline"][0]) >= 3  # a curve, not one point
    dyn = json.loads((tmp_path / "dynamic-weights" / "results.json").read_text())
    assert {t["id"] for t in dyn["tables"]} == {"dynamic-weights", "w-adv"} and dyn["tables"][1]["rows"]
    bound = json.loads((tmp_path / "bound" / "results.json").read_text())
    assert "not a certificate" in bound["tables"][0]["notes"][0]
    table1 = json.loads((tmp_path / "table1" / "results.json").read_text())
    assert table1["protocol"]["name"] == "pgd" and table1["protocol"]["chain"][0]["attacks"][0]["steps"] == 2
    assert (
        "racc: per-sample worst case under `pgd` (PGD steps 2," in table1["tables"][0]["notes"][-1]
    )  # every racc table
    assert "racc: per-sample worst case under `pgd`" in (tmp_path / "table2" / "tables.md").read_text()
    assert (tmp_path / "report" / "report.html").stat().st_size > 10_000
    # a second seed: only the seed-1 runs are new, and every cell is a mean over the two paired seeds
    assert main(["experiment", "table1", "--seeds", "2", "--no-report", *common]) == 0
    t1 = json.loads((tmp_path / "table1" / "results.json").read_text())
    assert t1["runs_trained"] == 2 and [r["student"] for r in t1["radar"]] == ["vit-s"]
    rows = t1["tables"][0]["rows"]
    assert [r[:2] for r in rows[:3]] == [["original", "1/255"], ["baseline", "1/255"], ["mmt-ard", "1/255"]]
    assert rows[1][2]["n"] == 2 and rows[2][3]["n"] == 2
    base = t1["data"]["vit-s"]["baseline"]
    assert rows[1][2]["mean"] == pytest.approx((base[0]["acc"] + base[1]["acc"]) / 2, abs=1e-3)


def test_the_paper_preset_checks_every_data_set_before_training(tmp_path):
    preset = paper_preset(_paper_inputs(tmp_path))  # the folders exist but hold no class folders
    with pytest.raises(UserError, match="no class subfolders"):
        preset.prepare()


def test_a_world_passed_with_another_config_is_refused_not_retrained(tmp_path):
    from mmt_ard.experiments.presets import builtin_preset

    stage = tmp_path / "pretrain-teacher"
    stage.mkdir()
    (stage / "summary.json").write_text("{}")
    (stage / "config.yaml").write_text("config: {model: {arch: something-else}}\n")
    with pytest.raises(UserError, match="left alone"):
        builtin_preset(tmp_path, smoke_plan(), keep_foreign=True).prepare()
    assert (stage / "config.yaml").read_text().startswith("config: {model: {arch: something-else}")


def test_the_run_store_reuses_by_its_own_key_and_continues_a_stopped_run(tmp_path, monkeypatch):
    """config.yaml holds the resolved config (bf16 -> fp32 without native bf16): the store's own key decides.
    A run interrupted before its summary is resumed from its checkpoint, never retrained from scratch."""
    from mmt_ard.config import to_dict
    from mmt_ard.distill.run import DistillConfig
    from mmt_ard.experiments import store as store_mod

    monkeypatch.setattr(store_mod, "run_distill", lambda *a, **k: pytest.fail("retrained a finished run"))
    s = store_mod.RunStore(tmp_path)
    cfg = s.config(DistillConfig(), {"loop.precision": "bf16", "loss.gamma": 0.0}, seed=1)
    assert cfg.loop.seed == 1 and cfg.loss.gamma == 0.0 and cfg.loop.precision == "bf16"
    key = to_dict(cfg)
    key.pop("output")
    name = f"mmt-vit-s-confidence-s1-{store_mod.digest(key, store_mod.RUN_DIGEST)}"
    folder = tmp_path / "runs" / name
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("config: {loop: {precision: fp32}}\n")
    (folder / "experiment-key.json").write_text(json.dumps(key))
    (folder / "summary.json").write_text(json.dumps({"val": {"acc": 1.0}}))
    before = copy.deepcopy(cfg)
    run = s.distill("x", cfg)
    assert run.path == folder and run.seconds == 0.0 and run.summary["val"]["acc"] == 1.0
    assert cfg == before and cfg.output == "" and run.cfg.output == str(folder)  # the caller's config is not changed
    # interrupted (no summary, a checkpoint): resumed; stopped again: one clear error, no key file
    calls = []

    def stopped(c, resume, overwrite):
        calls.append((c.output, resume, overwrite))
        return {"stopped_at": 3, "reason": "signal SIGTERM"}

    (folder / "summary.json").unlink()
    (folder / "experiment-key.json").unlink()
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"state")
    monkeypatch.setattr(store_mod, "run_distill", stopped)
    with pytest.raises(UserError, match="stopped at step 3.*rerun the same command"):
        s.distill("x", cfg)
    assert calls == [(str(folder), True, False)] and not (folder / "experiment-key.json").exists()

    def finished(c, resume, overwrite):
        calls.append((c.output, resume, overwrite))
        Path(c.output).mkdir(parents=True, exist_ok=True)
        (Path(c.output) / "summary.json").write_text(json.dumps({"val": {"acc": 2.0}}))
        return {"val": {"acc": 2.0}}

    monkeypatch.setattr(store_mod, "run_distill", finished)
    assert s.distill("x", cfg).summary["val"]["acc"] == 2.0 and calls[-1] == (str(folder), True, False)
    assert json.loads((folder / "experiment-key.json").read_text()) == key
    other = s.config(DistillConfig(), {"loss.gamma": 0.5}, seed=1)  # no checkpoint: a fresh run
    s.distill("y", other)
    assert calls[-1][1:] == (False, True)


def test_the_run_store_resumes_a_real_interrupted_distillation(tmp_path):
    """The path a Ctrl-C takes: run_distill stops with a checkpoint and no summary.json; the store
    continues that very run (its config.yaml accepts the store's config) instead of failing or retraining."""
    from mmt_ard.config import load_config, to_dict
    from mmt_ard.distill.run import DistillConfig, run_distill
    from mmt_ard.experiments.store import RUN_DIGEST, RunStore, digest
    from tests.helpers import TINY

    s = RunStore(tmp_path)
    cfg = s.config(load_config(DistillConfig, overrides=TINY), {}, seed=0)
    key = to_dict(cfg)
    key.pop("output")
    folder = tmp_path / "runs" / f"mmt-vit-s-confidence-s0-{digest(key, RUN_DIGEST)}"  # where the store keeps it
    stopped = load_config(DistillConfig, base=cfg, values={"loop.stop_after": 3, "output": str(folder)})
    assert run_distill(stopped, overwrite=True)["stopped_at"] == 3  # as a signal leaves it

    def train_rows():
        rows = [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines()]
        return [r for r in rows if r["split"] == "train"]

    before = train_rows()  # steps 1-3, with their wall-clock images_per_s: a retrained run rewrites them
    run = s.distill("x", cfg)
    after = train_rows()
    assert [r["step"] for r in after] == [1, 2, 3, 4, 5, 6] and after[:3] == before  # continued at step 4
    assert run.path == folder and run.summary["train"] and s.trained == [str(folder)]


def test_run_folders_of_earlier_versions_keep_their_names_and_are_reused(tmp_path, monkeypatch):
    """The folder name's digest is the one earlier versions computed (their folders are found), and a
    finished folder written before experiment-key.json whose config.yaml records exactly the request
    gets its key file and is reused; one whose config.yaml differs is continued from its checkpoint."""
    import hashlib
    from dataclasses import replace

    from mmt_ard.config import load_config, save_config, to_dict
    from mmt_ard.distill.run import DistillConfig
    from mmt_ard.experiments import store as store_mod

    s = store_mod.RunStore(tmp_path)
    cfg = s.config(DistillConfig(), {"loss.gamma": 0.25}, seed=2)
    key = to_dict(cfg)
    key.pop("output")
    earlier = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    assert store_mod.digest(key, store_mod.RUN_DIGEST) == earlier  # how folders were named before FinishedWork
    folder = tmp_path / "runs" / f"mmt-vit-s-confidence-s2-{earlier}"
    folder.mkdir(parents=True)
    save_config(replace(cfg, output=str(folder)), folder / "config.yaml", extra={"version": {}})
    (folder / "summary.json").write_text(json.dumps({"val": {"acc": 3.0}}))
    monkeypatch.setattr(store_mod, "run_distill", lambda *a, **k: pytest.fail("retrained a finished run"))
    assert s.distill("x", cfg).summary["val"]["acc"] == 3.0 and s.trained == []
    assert json.loads((folder / "experiment-key.json").read_text()) == key  # from now on its key decides
    # a folder of an earlier version whose config.yaml records another precision than asked: not trusted
    (folder / "experiment-key.json").unlink()
    ran_as = load_config(DistillConfig, base=cfg, values={"loop.precision": "bf16", "output": str(folder)})
    save_config(ran_as, folder / "config.yaml", extra={"version": {}})
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"state at its last step")
    calls = []
    monkeypatch.setattr(store_mod, "run_distill", lambda c, resume, overwrite: calls.append(resume) or {})
    s.distill("x", cfg)
    assert calls == [True] and (folder / "experiment-key.json").is_file()


def test_the_store_caches_an_evaluation_by_config_and_weights_file(tmp_path, monkeypatch):
    """FinishedWork.named beside the weights, keyed by the eval config and spec_stamp: a second call reads
    the file; new weights (size or mtime) or another eval config evaluate again."""
    import os
    from dataclasses import replace

    from mmt_ard.evaluation import EvalConfig, ModelResult
    from mmt_ard.experiments import store as store_mod
    from mmt_ard.models import ModelSpec

    weights = tmp_path / "student" / "open_clip_model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"weights")
    calls = []
    monkeypatch.setattr(store_mod, "load_clip", lambda spec, device: spec)
    monkeypatch.setattr(
        store_mod, "evaluate_model", lambda *a, **k: calls.append(1) or ModelResult(acc=float(len(calls)), racc={})
    )
    s = store_mod.RunStore(tmp_path, device="cpu")
    spec, cfg = ModelSpec("mmt-vit-s", str(weights.parent)), EvalConfig(limit=8)
    assert s.evaluate("a", spec, cfg).acc == 1.0
    assert s.evaluate("a", spec, cfg).acc == 1.0 and len(calls) == 1  # read back, typed
    cached = list(weights.parent.glob("evaluation-*.json"))
    assert len(cached) == 1
    assert s.evaluate("a", spec, replace(cfg, limit=9)).acc == 2.0  # another eval config
    weights.write_bytes(b"new weights")  # another model under the same path
    os.utime(weights, ns=(1, 1))
    assert s.evaluate("a", spec, cfg).acc == 3.0 and len(calls) == 3
