"""evaluation/tables.py: every table built once from typed results, checked cell by cell on hand-made results."""

import pytest

from mmt_ard.evaluation import EvalConfig, results_markdown
from mmt_ard.evaluation.results import ModelResult
from mmt_ard.evaluation.tables import (
    CLEAN_NOTE,
    build_attack_gap,
    build_sanity,
    build_table1,
    build_zero_shot,
    evaluation_tables,
)
from mmt_ard.tables import markdown_table as render

PROTOCOL = {"name": "pgd+apgd-ce", "summary": "`pgd` (PGD steps 10) then `apgd-ce` (APGD-CE iterations 100)"}


def result(acc: float, racc: dict[str, float], **kwargs) -> ModelResult:
    """Distinct numbers per field, so a swapped or misplaced value shows."""
    return ModelResult(
        acc=acc,
        racc=racc,
        sum_acc={e: round(acc + v, 2) for e, v in racc.items()},
        **kwargs,
    )


@pytest.fixture
def results() -> dict[str, ModelResult]:
    eps = {"1/255": 41.0, "2/255": 33.0, "4/255": 17.0}
    return {
        "teachers/clean": result(90.0, {"1/255": 12.0, "2/255": 5.0, "4/255": 1.0}, zero_shot={"combos": 70.0}),
        "vit-s/baseline": result(60.0, eps, zero_shot={"combos": 44.0, "outlines": 40.0}),
        "vit-s/mmt-ard": result(
            62.5,
            {"1/255": 45.5, "2/255": 36.25, "4/255": 20.0},
            zero_shot={"combos": 50.0, "outlines": 46.0},
            zero_shot_racc={"combos": {"1/255": 30.0}, "outlines": {"1/255": 26.0}},
            attack="pgd+apgd-ce",
            protocol=PROTOCOL,
            racc_by_attack={"pgd": {"1/255": 47.0, "2/255": 39.0, "4/255": 20.0}, "apgd-ce": {}},
        ),
        "rn-s/mmt-ard": result(55.0, {"1/255": 30.0, "2/255": 21.0, "4/255": 9.0}, zero_shot={"combos": 38.0}),
    }


def test_table1_is_one_table_per_student_group_with_the_teachers_last(results):
    tables = build_table1(results)
    assert [t.id for t in tables] == ["table1-vit-s", "table1-rn-s", "table1-teachers"]  # no group missing
    assert all(t.columns == ["method", "eps", "acc", "racc", "sum-acc", "clip-zero"] for t in tables)
    vit = {(r[0], r[1]): r[2:] for r in tables[0].rows}
    assert set(vit) == {(m, e) for m in ("baseline", "mmt-ard") for e in ("1/255", "2/255", "4/255")}
    # acc, racc at that eps (not another eps's), acc + racc, clip-zero
    assert vit["baseline", "2/255"] == [60.0, 33.0, 93.0, "42.00*"]  # clean zero-shot: marked
    assert vit["mmt-ard", "4/255"] == [62.5, 20.0, 82.5, "48.00*"]
    assert vit["mmt-ard", "1/255"] == [62.5, 45.5, 108.0, 28.0]  # robust zero-shot measured at 1/255: a number
    assert [r[:3] for r in tables[1].rows] == [["mmt-ard", e, 55.0] for e in ("1/255", "2/255", "4/255")]
    assert CLEAN_NOTE in tables[0].notes
    assert tables[0].notes[-1] == f"racc: per-sample worst case under {PROTOCOL['summary']}."
    assert not any("worst case" in n for n in tables[1].notes)  # rn-s records no protocol
    assert not any("worst case" in n for t in build_table1(results, protocols=False) for n in t.notes)


def test_table1_leaves_an_eps_a_model_was_not_attacked_at_empty():
    tables = build_table1({"s/a": result(50.0, {"1/255": 40.0}), "s/b": result(52.0, {"2/255": 30.0})})
    rows = {(r[0], r[1]): r[2:] for r in tables[0].rows}
    assert rows["a", "2/255"] == [50.0, None, None, None] and rows["b", "2/255"] == [52.0, 30.0, 82.0, None]
    assert "| a | 2/255 | 50.00 | - | - | - |" in render(tables[0])


def test_zero_shot_table(results):
    table = build_zero_shot(results)
    assert table.columns == ["model", "combos", "outlines"]
    assert table.rows[1] == ["vit-s/baseline", 44.0, 40.0] and table.rows[0] == ["teachers/clean", 70.0, None]
    assert build_zero_shot({"m": result(1.0, {})}) is None


def test_attack_gap_is_pgd_minus_the_worst_case_for_chains_after_pgd(results):
    table = build_attack_gap(results)
    assert table.columns == ["model", "eps", "racc PGD", "racc worst case (chain)", "gap PGD - chain"]
    assert table.rows == [
        ["vit-s/mmt-ard", "1/255", 47.0, 45.5, 1.5],  # PGD alone overstates: a positive gap
        ["vit-s/mmt-ard", "2/255", 39.0, 36.25, 2.75],
        ["vit-s/mmt-ard", "4/255", 20.0, 20.0, 0.0],
    ]
    assert "`pgd+apgd-ce`" in table.notes[0]
    later = {"m": result(50.0, {"1/255": 30.0}, attack="apgd-ce+pgd", racc_by_attack={"pgd": {"1/255": 30.0}})}
    assert build_attack_gap(later) is None  # pgd's entry is not PGD alone there


def test_attack_gap_of_a_longer_prefix_the_demos_reduced_chain():
    res = result(
        50.0,
        {"2/255": 20.0},
        attack="pgd+apgd-ce+apgd-t+autoattack",
        racc_by_attack={"pgd": {"2/255": 30.0}, "apgd-t": {"2/255": 24.0}, "autoattack": {"2/255": 20.0}},
    )
    table = build_attack_gap({"m": res}, upto="apgd-t")
    assert table.rows == [["m", "2/255", 24.0, 20.0, 4.0]] and table.columns[2] == "racc chain through apgd-t"
    assert build_attack_gap({"m": res}, upto="autoattack") is None  # nothing runs after it


def test_sanity_table_names_each_failure_with_cause_and_fix():
    ok = {"ok": True, "value": 1, "detail": "fine"}
    bad = {"ok": False, "value": 0, "detail": "4 of 8 zero", "cause": "masking", "fix": "remove rounding"}
    table = build_sanity(
        {
            "a": result(1.0, {}, sanity={"x": ok, "y": ok}),
            "b": result(1.0, {}, sanity={"x": ok, "g": bad}),
            "c": result(1.0, {}),
        }
    )
    assert table.rows == [
        ["a", "all checks pass (x, y)"],
        ["b", "g FAILED: 4 of 8 zero (likely masking; try: remove rounding)"],
    ]
    assert build_sanity({"c": result(1.0, {})}) is None


def test_every_table_in_order_and_the_markdown_strings_are_their_renderings(results):
    results["vit-s/mmt-ard"].sanity = {"x": {"ok": True, "value": 1, "detail": ""}}
    tables = evaluation_tables(results)
    assert [t.id for t in tables] == [
        "table1-vit-s",
        "table1-rn-s",
        "table1-teachers",
        "zero-shot",
        "pgd-vs-chain",
        "sanity",
    ]
    table1 = build_table1(results, protocols=False)
    every = [*table1, build_zero_shot(results), build_attack_gap(results), build_sanity(results)]
    assert results_markdown(results, EvalConfig(eps=[])) == "\n".join(
        render(t) for t in every
    )  # rendered, not re-built
