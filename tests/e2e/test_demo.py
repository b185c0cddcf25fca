"""The demo: its plans (YAML presets, pinned to the values of the Python plans they replaced), its stages,
reuse of finished stages, its terminal, and CI's smoke test: `mmt-ard demo --quick` end to end, and a
second run reuses every stage."""

import json
import logging
import re
import sys
import time
from pathlib import Path

import pytest

from mmt_ard.cli.main import main
from mmt_ard.config import save_config, to_dict
from mmt_ard.demo import REDUCED_CHAIN, DemoPlan, plan_stages
from mmt_ard.demo.stages import finished
from mmt_ard.errors import ConfigError
from tests.conftest import smoke_plan
from tests.helpers import Terminal, log_inside_a_bar, stage_lines

MODELS = {
    "teachers/clean",
    "teachers/adversarial",
    "vit-s/original",
    "vit-s/baseline",
    "vit-s/mmt-ard",
    "rn-s/original",
    "rn-s/baseline",
    "rn-s/mmt-ard",
    "vit-s-lora/mmt-ard",
}
# the sizes DemoPlan() and DemoPlan.quick() had in Python before the plans became YAML presets
DEFAULT_SIZES = {
    "pretrain_teacher_steps": 400,
    "pretrain_student_steps": 400,
    "pretrain_batch": 128,
    "pretrain_lr": 2e-3,  # was `2e-3 if steps >= 200 else 3e-3`
    "clean_steps": 300,
    "adv_steps": 150,
    "distill_steps": 200,
    "distill_batch": 64,
    "inner_steps": 3,
    "eval_limit": 1000,
    "eval_steps": 10,
    "caption_n": 20000,
    "train_n": 12000,
    "apgd_iterations": 10,
    "apgd_targets": 1,
    "sanity_samples": 64,
    "gap_limit": 200,
    "gap_students": ["vit-s", "rn-s"],
}
QUICK_SIZES = {
    **DEFAULT_SIZES,
    "pretrain_teacher_steps": 100,
    "pretrain_student_steps": 100,
    "pretrain_batch": 64,
    "pretrain_lr": 3e-3,
    "clean_steps": 40,
    "adv_steps": 30,
    "distill_steps": 40,
    "distill_batch": 32,
    "inner_steps": 2,
    "eval_limit": 300,
    "eval_steps": 5,
    "caption_n": 6000,
    "train_n": 3000,
    "apgd_iterations": 3,
    "apgd_targets": 1,
    "sanity_samples": 16,
    "gap_limit": 8,
}
LORA = ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"]
# student_recipe(..., lora: bool) before: full fine-tuning at lr 2e-3 and eps 2/255; LoRA at 1e-2 and 4/255
STUDENTS = {
    "vit-s": {"arch": "mmt-vit-s", "start": "vit-s", "lr": 2e-3, "eps": 2 / 255, "step_size": 1 / 255, "lora": []},
    "rn-s": {"arch": "mmt-rn-s", "start": "rn-s", "lr": 2e-3, "eps": 2 / 255, "step_size": 1 / 255, "lora": []},
    "vit-s-lora": {
        "arch": "mmt-vit-s",
        "start": "vit-s",
        "lr": 1e-2,
        "eps": 4 / 255,
        "step_size": 2 / 255,
        "lora": LORA,
    },
}
STUDENTS = {k: {**v, "baseline": k != "vit-s-lora"} for k, v in STUDENTS.items()}
_TEACHERS = {"teacher_clean.pretrained": "OUT/teacher-clean/model", "teacher_adv.pretrained": "OUT/teacher-adv/model"}
_DISTILL = {**_TEACHERS, "data": "builtin:shapes:split=train,n=12000", "attack.steps": 3, "optim.steps": 200}
_DISTILL |= {"loop.eval_every": 50}
_BASELINE = {"loss.gamma": 0.0, "loss.strategy.name": "adv-only"}
# every stage of the default plan as the Python plan built it: each value that differs from its config's default
STAGES = {
    "pretrain-teacher": ("run_pretrain", {"data": "builtin:captions:split=train,n=20000"}),
    "pretrain-vit-s": ("run_pretrain", {"model.arch": "mmt-vit-s", "data": "builtin:captions:split=train,n=20000"}),
    "pretrain-rn-s": ("run_pretrain", {"model.arch": "mmt-rn-s", "data": "builtin:captions:split=train,n=20000"}),
    "teacher-clean": (
        "run_finetune",
        {
            "method": "clean",
            "model.pretrained": "OUT/pretrain-teacher/model",
            "data": "builtin:shapes:split=train,n=12000",
            "optim.lr": 3e-4,
        },
    ),
    "teacher-adv": (
        "run_finetune",
        {
            "model.pretrained": "OUT/pretrain-teacher/model",
            "data": "builtin:shapes:split=train,n=12000",
            "attack.eps": 4 / 255,
            "attack.step_size": 2 / 255,
            "optim.steps": 150,
            "optim.lr": 3e-4,
        },
    ),
    "distill-vit-s-adv-only": (
        "run_distill",
        {"student.pretrained": "OUT/pretrain-vit-s/model", **_DISTILL, **_BASELINE, "optim.lr": 2e-3},
    ),
    "distill-vit-s-confidence": (
        "run_distill",
        {"student.pretrained": "OUT/pretrain-vit-s/model", **_DISTILL, "optim.lr": 2e-3},
    ),
    "distill-rn-s-adv-only": (
        "run_distill",
        {
            "student.arch": "mmt-rn-s",
            "student.pretrained": "OUT/pretrain-rn-s/model",
            **_DISTILL,
            **_BASELINE,
            "optim.lr": 2e-3,
        },
    ),
    "distill-rn-s-confidence": (
        "run_distill",
        {"student.arch": "mmt-rn-s", "student.pretrained": "OUT/pretrain-rn-s/model", **_DISTILL, "optim.lr": 2e-3},
    ),
    "distill-vit-s-lora-confidence": (
        "run_distill",
        {
            "student.pretrained": "OUT/pretrain-vit-s/model",
            "lora.enabled": True,
            "lora.target_modules": LORA,
            **_DISTILL,
            "attack.eps": 4 / 255,
            "attack.step_size": 2 / 255,
            "optim.lr": 1e-2,
        },
    ),
}


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _set(cfg) -> dict:
    """The values of ``cfg`` that differ from its class's defaults (``output`` aside: it is the stage's folder)."""
    default = _flat(to_dict(type(cfg)()))
    return {k: v for k, v in _flat(to_dict(cfg)).items() if k != "output" and default.get(k, "<absent>") != v}


@pytest.mark.parametrize(("name", "sizes"), [("default", DEFAULT_SIZES), ("quick", QUICK_SIZES)])
def test_the_shipped_plans_keep_the_values_of_the_python_plans(name, sizes):
    plan = DemoPlan.load(name, device="cpu")
    values = to_dict(plan)
    assert values.pop("device") == "cpu" and values.pop("students") == STUDENTS and values == sizes
    assert to_dict(DemoPlan.default() if name == "default" else DemoPlan.quick()) == {
        **values,
        "students": STUDENTS,
        "device": "auto",
    }


def test_the_default_plan_builds_the_stages_of_the_python_plan():
    stages = plan_stages(Path("OUT"), DemoPlan.default())
    assert [s.name for s in stages] == list(STAGES)  # the order too: the world first, each student's baseline first
    for stage in stages:
        assert stage.cfg.output == f"OUT/{stage.name}"
        assert (stage.run.__name__, _set(stage.cfg)) == STAGES[stage.name], stage.name


def test_a_plan_takes_keywords_overrides_and_a_base(tmp_path):
    plan = DemoPlan.load("quick", ["students.vit-s.lr=5e-3"], distill_steps=7)
    assert plan.distill_steps == 7 and plan.students["vit-s"].lr == 5e-3 and plan.train_n == 3000
    assert plan.students["rn-s"].lr == 2e-3  # a section is merged key by key
    own = tmp_path / "tiny.yaml"
    own.write_text("base: quick\ndistill_steps: 3\nstudents:\n  vit-s-lora: {lr: 2e-2}\n")
    tiny = DemoPlan.load(own)
    assert tiny.distill_steps == 3 and tiny.train_n == 3000 and tiny.students["vit-s-lora"].lr == 2e-2
    assert tiny.students["vit-s-lora"].lora == LORA and list(tiny.students) == list(STUDENTS)
    with pytest.raises(ConfigError, match="distil_steps"):
        DemoPlan.load("quick", distil_steps=3)
    with pytest.raises(ConfigError, match="default, quick"):
        DemoPlan.load("nonesuch")
    with pytest.raises(ConfigError, match="gap_students"):
        DemoPlan.load("quick", gap_students=["vit-b"])
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop\n")
    with pytest.raises(ConfigError, match="its own base"):
        DemoPlan.load(loop)


def test_a_finished_stage_is_reused_only_with_the_same_config(tmp_path):
    stage = plan_stages(tmp_path, smoke_plan())[5]  # the first distillation
    folder = Path(stage.cfg.output)
    folder.mkdir()
    assert finished(stage) is None
    save_config(stage.cfg, folder / "config.yaml", extra={"version": "x"})
    (folder / "summary.json").write_text('{"val": {"acc": 50.0}}')
    assert finished(stage) == {"val": {"acc": 50.0}}
    other = plan_stages(tmp_path, DemoPlan.load("quick", [], **{**to_dict(smoke_plan()), "distill_steps": 7}))[5]
    assert other.name == stage.name and finished(other) is None


def check_terminal(raw: str, names: list[str], reused: bool) -> None:
    """One line per stage, the overall bar, no data-set line, no log line inside a bar."""
    lines = stage_lines(raw)
    assert len(lines) == len(names), lines
    for i, (line, name) in enumerate(zip(lines, names), 1):
        assert re.search(rf"\[{i}/{len(names)}\] {re.escape(name)}: (reusing \S|ran in \d+\.\d s)", line), line
    assert all("reusing" in line for line in lines) == reused
    assert f"demo {len(names)}/{len(names)} stages |" in raw  # the overall bar, finished
    assert "data set builtin:" not in raw and "generated shapes" not in raw  # at DEBUG now
    assert not log_inside_a_bar(raw)


def test_quick_demo_end_to_end_and_reuse(smoke_world, capsys, caplog, monkeypatch):
    tmp_path = smoke_world  # the world stages are shared with the experiments test
    monkeypatch.setattr(DemoPlan, "quick", staticmethod(smoke_plan))
    names = [s.name for s in plan_stages(tmp_path, smoke_plan())] + ["evaluate", "reduced chain vs autoattack"]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--output", str(tmp_path)]) == 0
    first = time.perf_counter() - t0
    check_terminal(terminal.getvalue(), names, reused=False)
    assert "%|" in terminal.getvalue()  # the training bars were drawn too
    assert "about" in terminal.getvalue() and " left" in terminal.getvalue()  # the time left
    demo_log = (tmp_path / "demo.log").read_text()
    assert "DEBUG mmt_ard.data.datasets: data set builtin:shapes:split=val" in demo_log  # in the folder's log
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == MODELS
    for res in results.values():
        assert set(res["racc"]) == {"1/255", "2/255", "3/255", "4/255"}
        assert set(res["zero_shot"]) == {"combos", "outlines"}
    report = (tmp_path / "report.md").read_text()
    assert (
        "**Table 1: vit-s**" in report
        and "**Table 1: teachers**" in report
        and "| mmt-ard | 1/255 |" in report
        and "| baseline | 4/255 |" in report
    )
    assert (
        "gap PGD - chain |" in report
        and "| rn-s/mmt-ard | 4/255 |" in report
        and "**Sanity checks (gradient masking, weak attacks)**" in report
    )
    for res in results.values():
        assert res["attack"] == REDUCED_CHAIN and all(f["ok"] in (True, False) for f in res["sanity"].values())
        assert res["protocol"]["chain"][1]["attacks"][0]["iterations"] == 2  # the plan's, recorded
    assert "not* AutoAttack" in report  # the reduced chain is never called AutoAttack
    gap = json.loads((tmp_path / "protocol-gap.json").read_text())
    assert set(gap) == {"rn-s/mmt-ard", "vit-s/mmt-ard"}
    for res in gap.values():
        assert res["n"] == 4 and res["racc"]["4/255"] <= res["racc_by_attack"]["apgd-t"]["4/255"]
        assert res["protocol"]["chain"][3]["attacks"][0] | {"source": ""} == {
            "attack": "apgd-ce",
            "iterations": 100,
            "restarts": 5,
            "source": "",
        }  # the real protocol
    assert "**Reduced chain vs the autoattack protocol**" in report and "(4 images)" in report
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert "report/report.html" in report and (tmp_path / "report" / "report.html").stat().st_size > 10_000
    assert str(tmp_path / "report.md") in capsys.readouterr().out
    for stage in ("distill-vit-s-confidence", "distill-vit-s-lora-confidence", "teacher-adv"):
        assert (tmp_path / stage / "summary.json").is_file()
    assert (tmp_path / "distill-vit-s-lora-confidence" / "adapters" / "adapter_config.json").is_file()

    caplog.set_level(logging.INFO, logger="mmt_ard")
    caplog.clear()  # the first run may have reused the world stages the experiments test built
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--output", str(tmp_path)]) == 0
    second = time.perf_counter() - t0
    check_terminal(terminal.getvalue(), names, reused=True)
    reused = [r.getMessage() for r in caplog.records if "reusing" in r.getMessage()]
    assert len(reused) == 12  # ten training stages, the evaluation and the protocol gap
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert second < first / 3
