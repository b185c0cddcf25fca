"""The answer first: each student's Table-1 numbers read back from its table, and one sentence on them.

A *student table* is any table with the columns ``method``, ``eps``, ``acc`` and ``racc`` whose rows
include ``original``, ``baseline`` or ``mmt-ard``: the per-student Table 1 of a demo / evaluate folder
and the ``table1-STUDENT`` tables of the Table-1 experiment alike. Reading the shown table (rather
than the raw results) keeps the headline, the eps figure and the table in agreement by construction.
Cells are plain numbers (one evaluation) or ``{"mean", "std", "n", "mark"}`` over seeds, where the
mark :data:`SIGNIFICANT` says the paired difference to the baseline exceeds 2 SE.
"""

from __future__ import annotations

from mmt_ard.reporting.model import Cell, Headline, Point, Run, Student, Table

METHODS = ("original", "baseline", "mmt-ard")  # the rows a student table has, drawn in this order
HEADLINE_EPS = "2/255"  # the paper's headline budget; the first eps measured when absent
SIGNIFICANT = "†"  # experiments.stats.SIGNIFICANT: the mark a cell gets when its paired test passes
NAMES = {"mmt-ard": "MMT-ARD", "baseline": "baseline", "original": "original"}
TABLE1_PREFIX = "table1-"
MISSING = {  # what a run with one method of a student lacks for the comparison
    "mmt-ard": " (no baseline in this run to compare with)",
    "baseline": " (no MMT-ARD model in this run)",
    "original": " (no baseline or MMT-ARD model in this run)",
}


def student_results(tables: list[Table]) -> list[Student]:
    """A :class:`Student` per student table, in table order; other tables are skipped."""
    out = []
    for table in tables:
        student = read_student(table)
        if student is not None:
            out.append(student)
    return out


def read_student(table: Table) -> Student | None:
    """The table's numbers by method, or None when it is not a student table."""
    cols = {c: i for i, c in enumerate(table.columns)}
    if not all(c in cols for c in ("method", "eps", "acc", "racc")):
        return None
    if not any(row[cols["method"]] in METHODS for row in table.rows):
        return None  # e.g. the teachers (clean, adversarial)
    student = Student(name=student_name(table), table_id=table.id)
    for row in table.rows:
        method, eps = str(row[cols["method"]]), str(row[cols["eps"]])
        acc, racc = point(row[cols["acc"]]), point(row[cols["racc"]])
        if acc is not None:
            student.acc.setdefault(method, acc)
        if racc is not None:
            student.racc.setdefault(method, {})[eps] = racc
    return student if student.racc else None


def student_name(table: Table) -> str:
    """``table1-vit-s`` -> ``vit-s``; else the title's last word (``Table 1, student vit-s``)."""
    if table.id.startswith(TABLE1_PREFIX):
        return table.id[len(TABLE1_PREFIX) :]
    return table.title.split()[-1] if table.title.split() else table.id


def point(cell: Cell) -> Point | None:
    """A number or a statistic cell as a :class:`Point`; text, null and starred cells are not points."""
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, (int, float)):
        return Point(float(cell))
    if isinstance(cell, dict) and isinstance(cell.get("mean"), (int, float)):
        std = cell.get("std")
        return Point(
            mean=float(cell["mean"]),
            std=float(std) if isinstance(std, (int, float)) else None,
            n=int(cell.get("n") or 1),
            significant=SIGNIFICANT in str(cell.get("mark") or ""),
        )
    return None


def headline_eps(student: Student, methods: list[str]) -> str | None:
    """2/255 when every one of ``methods`` was measured there, else the first eps they share."""
    common = [e for e in student.eps() if all(e in student.racc.get(m, {}) for m in methods)]
    if not common:
        return None
    return HEADLINE_EPS if HEADLINE_EPS in common else common[0]


def headline(student: Student) -> Headline | None:
    """One sentence: MMT-ARD vs baseline robust and clean accuracy at the headline eps, the original's
    numbers beside them, and what the seeds allow one to say (significance, or "one seed")."""
    pair = [m for m in ("mmt-ard", "baseline") if m in student.racc]
    if not pair:
        pair = [m for m in student.racc][:1]
    eps = headline_eps(student, pair)
    if eps is None:
        return None
    robust = [student.racc[m][eps] for m in pair]
    clean = [student.acc.get(m) for m in pair]
    names = [NAMES.get(m, m) for m in pair]
    if len(pair) == 2:
        text = f"{names[0]} {_pct(robust[0])} vs {names[1]} {_pct(robust[1])} robust accuracy at {eps} "
        text += f"({_diff(robust[0], robust[1])})"
        if clean[0] is not None and clean[1] is not None:
            text += f", clean {_pct(clean[0])} vs {_pct(clean[1])} ({_diff(clean[0], clean[1])})"
    else:
        text = f"{names[0]} {_pct(robust[0])} robust accuracy at {eps}"
        text += f", clean {_pct(clean[0])}" if clean[0] is not None else ""
        text += MISSING.get(pair[0], MISSING["original"])
    original = student.racc.get("original", {}).get(eps)
    if original is not None and "original" not in pair:
        text += f"; undistilled original {_pct(original)} robust"
        text += f", {_pct(student.acc['original'])} clean" if "original" in student.acc else ""
    return Headline(student=student.name, text=text + ". " + _seeds(robust[0], len(pair) == 2))


def _seeds(p: Point, compared: bool) -> str:
    if p.n < 2:
        return "One seed: no significance."
    how = f"Mean ± std over {p.n} paired seeds"
    if compared:
        how += f"; significant = paired difference > 2 SE ({SIGNIFICANT})"
    return how + "."


def _pct(p: Point) -> str:
    spread = f" ± {p.std:.1f}" if p.std is not None and p.n > 1 else ""
    return f"{p.mean:.1f}{spread}%"


def _diff(a: Point, b: Point) -> str:
    text = f"{a.mean - b.mean:+.1f}"
    if a.n > 1:
        text += ", significant" if a.significant else ", not significant"
    return text


def add_headlines(run: Run) -> Run:
    """``run`` with its students read from its tables and a headline for each (in place; returned)."""
    run.students = student_results(run.tables)
    run.headlines = [h for h in map(headline, run.students) if h is not None]
    return run
