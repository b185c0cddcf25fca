"""CI's smoke test: `mmt-ard demo --quick` end to end, and a second run reuses every stage."""

import json
import logging
import time

from mmt_ard.cli.demo import DemoPlan
from mmt_ard.cli.main import main


def smoke_plan(device: str = "auto") -> DemoPlan:
    """``--quick`` made smaller still: the test checks the plumbing, not the numbers."""
    return DemoPlan(pretrain_teacher_steps=20, pretrain_student_steps=20, pretrain_batch=32, clean_steps=10,
                    adv_steps=10, distill_steps=8, distill_batch=16, inner_steps=1, eval_limit=64, eval_steps=2,
                    device=device, caption_n=1000, train_n=500, aa_iterations=2, aa_targets=1, sanity_samples=8)

MODELS = {
    "teachers/clean", "teachers/adversarial", "vit-s/original", "vit-s/baseline", "vit-s/mmt-ard",
    "rn-s/original", "rn-s/baseline", "rn-s/mmt-ard", "vit-s-lora/mmt-ard",
}


def test_quick_demo_end_to_end_and_reuse(tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setattr(DemoPlan, "quick", staticmethod(smoke_plan))
    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--output", str(tmp_path)]) == 0
    first = time.perf_counter() - t0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == MODELS
    for res in results.values():
        assert set(res["racc"]) == {"1/255", "2/255", "3/255", "4/255"}
        assert set(res["zero_shot"]) == {"combos", "outlines"}
    report = (tmp_path / "report.md").read_text()
    assert "## Students" in report and "| mmt-ard | 1/255 |" in report and "| baseline | 4/255 |" in report
    assert "gap PGD - AA |" in report and "| rn-s/mmt-ard | 4/255 |" in report and "## Sanity checks" in report
    for res in results.values():
        assert res["attack"] == "pgd+autoattack" and all(f["ok"] in (True, False) for f in res["sanity"].values())
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert str(tmp_path / "report.md") in capsys.readouterr().out
    for stage in ("distill-vit-s-confidence", "distill-vit-s-lora-confidence", "teacher-adv"):
        assert (tmp_path / stage / "summary.json").is_file()
    assert (tmp_path / "distill-vit-s-lora-confidence" / "adapters" / "adapter_config.json").is_file()

    caplog.set_level(logging.INFO, logger="mmt_ard")
    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--output", str(tmp_path)]) == 0
    second = time.perf_counter() - t0
    reused = [r.getMessage() for r in caplog.records if "reusing" in r.getMessage()]
    assert len(reused) == 11  # ten training stages and the evaluation
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert second < first / 3
