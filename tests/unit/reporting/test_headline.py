"""The report's answer first: students read back from their tables, the headline sentence, the eps figure."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from mmt_ard.experiments.stats import SIGNIFICANT as EXPERIMENT_MARK
from mmt_ard.reporting.figures import eps_png
from mmt_ard.reporting.headline import SIGNIFICANT, headline, read_student, student_results
from mmt_ard.reporting.model import Point, Table

PNG = b"\x89PNG\r\n\x1a\n"
COLUMNS = ["method", "eps", "acc", "racc", "sum-acc", "clip-zero"]


def stat(mean: float, std: float, n: int = 3, mark: str = "") -> dict[str, Any]:
    return {"mean": mean, "std": std, "n": n, **({"mark": mark} if mark else {})}


def seeded_table(mark: str = SIGNIFICANT, n: int = 3) -> Table:
    """A Table-1 experiment table as experiments/tables.py writes it: original one model, the rest over seeds."""
    rows: list[list[Any]] = []
    for eps, drop in (("1/255", 5.0), ("2/255", 10.0)):
        rows += [
            ["original", eps, 30.5, 30.5 - drop - 2, None, "24.80"],
            ["baseline", eps, stat(32.1, 0.4, n), stat(32.1 - drop, 0.3, n), None, None],
            ["mmt-ard", eps, stat(31.1, 0.5, n), stat(33.9 - drop, 0.2, n, mark), None, None],
        ]
    return Table(id="table1-vit-s", title="Table 1, student vit-s", columns=COLUMNS, rows=rows)


def test_the_mark_is_the_one_experiments_write():
    assert SIGNIFICANT == EXPERIMENT_MARK


def test_a_student_is_read_back_with_means_spreads_and_marks():
    student = read_student(seeded_table())
    assert student is not None and student.name == "vit-s" and student.eps() == ["1/255", "2/255"]
    assert student.acc["original"] == Point(30.5) and student.acc["baseline"] == Point(32.1, 0.4, 3, False)
    assert student.racc["mmt-ard"]["2/255"] == Point(23.9, 0.2, 3, True)
    assert student.racc["original"]["1/255"].mean == 23.5


def test_headline_with_seeds_says_whether_the_difference_is_significant():
    text = headline(read_student(seeded_table())).text
    assert text.startswith(
        "MMT-ARD 23.9 ± 0.2% vs baseline 22.1 ± 0.3% robust accuracy at 2/255 (+1.8, significant), "
        "clean 31.1 ± 0.5% vs 32.1 ± 0.4% (-1.0, not significant); undistilled original 18.5% robust, 30.5% clean."
    )
    assert "over 3 paired seeds" in text and "One seed" not in text
    unmarked = headline(read_student(seeded_table(mark=""))).text
    assert "(+1.8, not significant)" in unmarked


def test_headline_with_one_seed_claims_no_significance():
    text = headline(read_student(seeded_table(mark="", n=1))).text
    assert "MMT-ARD 23.9% vs baseline 22.1% robust accuracy at 2/255 (+1.8)," in text  # no spread, no verdict
    assert text.endswith("One seed: no significance.") and "significant" not in text.replace("significance", "")


def test_headline_eps_falls_back_to_the_first_shared_eps():
    table = seeded_table()
    table.rows = [r for r in table.rows if r[1] == "1/255"]
    assert "robust accuracy at 1/255" in headline(read_student(table)).text


def test_teachers_and_other_tables_are_not_students():
    teachers = Table(
        id="table1-teachers",
        title="Table 1: teachers",
        columns=COLUMNS,
        rows=[["clean", "2/255", 49.5, 17.0, 66.5, None]],
    )
    ablation = Table(id="table2", title="t", columns=["variant", "acc", "racc"], rows=[["average", 1.0, 2.0]])
    assert student_results([teachers, ablation, seeded_table()])[0].name == "vit-s"
    assert len(student_results([teachers, ablation, seeded_table()])) == 1


def test_eps_figure_draws_error_bars_only_where_there_is_a_spread():
    student = read_student(seeded_table())
    flat = copy.deepcopy(student)  # the same means and seeds, std 0: same title, no error bars
    flat.racc = {m: {e: replace(p, std=0.0) for e, p in by_eps.items()} for m, by_eps in flat.racc.items()}
    flat.acc = {m: replace(p, std=0.0) for m, p in flat.acc.items()}
    with_bars, without = eps_png([student]), eps_png([flat])
    assert with_bars.startswith(PNG) and without.startswith(PNG) and with_bars != without
    assert eps_png([flat]) == without  # drawing is deterministic, so the difference is the bars
