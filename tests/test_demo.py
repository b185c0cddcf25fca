"""CI's smoke test: `mmt-ard demo --quick` end to end, and a second run reuses every stage."""

import json
import logging
import time

from mmt_ard.cli.demo import DemoPlan
from mmt_ard.cli.main import main
from mmt_ard.experiments.world import REDUCED_CHAIN

from .conftest import smoke_plan

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


def test_quick_demo_end_to_end_and_reuse(smoke_world, capsys, caplog, monkeypatch):
    tmp_path = smoke_world  # the world stages are shared with the experiments test
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
    assert "gap PGD - chain |" in report and "| rn-s/mmt-ard | 4/255 |" in report and "## Sanity checks" in report
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
    assert "## Reduced chain vs the autoattack protocol" in report and "(4 images)" in report
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert "report/report.html" in report and (tmp_path / "report" / "report.html").stat().st_size > 10_000
    assert str(tmp_path / "report.md") in capsys.readouterr().out
    for stage in ("distill-vit-s-confidence", "distill-vit-s-lora-confidence", "teacher-adv"):
        assert (tmp_path / stage / "summary.json").is_file()
    assert (tmp_path / "distill-vit-s-lora-confidence" / "adapters" / "adapter_config.json").is_file()

    caplog.set_level(logging.INFO, logger="mmt_ard")
    caplog.clear()  # the first run may have reused the world stages the experiments test built
    t0 = time.perf_counter()
    assert main(["demo", "--quick", "--output", str(tmp_path)]) == 0
    second = time.perf_counter() - t0
    reused = [r.getMessage() for r in caplog.records if "reusing" in r.getMessage()]
    assert len(reused) == 12  # ten training stages, the evaluation and the protocol gap
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert second < first / 3
