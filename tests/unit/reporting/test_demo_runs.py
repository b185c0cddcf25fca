"""One report writer: a demo folder's page (``report.md`` and ``report.html``) comes from
:func:`mmt_ard.reporting.write_report`, with everything the demo's own ``report.md`` showed: the intro
(world, test images, zero-shot sets, the reduced chain), Table 1, PGD vs the chain, the reduced chain
vs the ``autoattack`` protocol (``protocol-gap.json``), the sanity checks, the timings and the machine."""

from __future__ import annotations

import ast
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

import mmt_ard
from mmt_ard.demo import REDUCED_CHAIN, DemoPlan
from mmt_ard.demo import run as demo_run
from mmt_ard.errors import UserError
from mmt_ard.evaluation.results import results_from_dict
from mmt_ard.reporting import DemoFacts, load_run, write_report
from mmt_ard.reporting.html import inline_html

CHAIN = "pgd+apgd-ce+apgd-t"
PNG = b"\x89PNG\r\n\x1a\n"
# the protocol gap: the reduced chain's racc (after apgd-t) and the worst case after autoattack, all distinct
REDUCED = {"2/255": 23.5, "4/255": 12.25}
AUTOATTACK = {"2/255": 20.0, "4/255": 9.5}
GAP_ROWS = ["| vit-s/mmt-ard | 2/255 | 23.50 | 20.00 | 3.50 |", "| vit-s/mmt-ard | 4/255 | 12.25 | 9.50 | 2.75 |"]
SECONDS = {"pretrain-teacher": 12.3, "distill-vit-s-confidence": 0.0, "evaluate": 4.5, "total": 131.0}
GAP_TITLE = "**Reduced chain vs the autoattack protocol**"


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid grey PNG written by hand (no plotting needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def entry(acc: float, racc: dict[str, float], chain: str = CHAIN, n: int = 300) -> dict[str, Any]:
    """One results.json entry as the demo writes it: the chain's racc after each attack, a sanity check."""
    return {
        "dataset": "builtin:shapes:split=test",
        "n": n,
        "acc": acc,
        "racc": racc,
        "sum_acc": {e: acc + v for e, v in racc.items()},
        "zero_shot": {"combos": 20.0, "outlines": 25.0},
        "attack": chain,
        "protocol": {"name": chain, "summary": "`pgd` (PGD steps 5)"},
        "racc_by_attack": {
            "pgd": {e: v + 2 for e, v in racc.items()},
            "apgd-ce": {e: v + 1 for e, v in racc.items()},
            "apgd-t": racc,
        },
        "sanity": {"monotone_in_eps": {"ok": True, "value": list(racc.values()), "detail": "non-increasing"}},
    }


def facts(**changes: Any) -> DemoFacts:
    values: dict[str, Any] = {
        "quick": True,
        "world": "Built-in shapes world",
        "dataset": "builtin:shapes:split=test",
        "test_images": 300,
        "zero_shot": ["combos", "outlines"],
        "chain": CHAIN,
        "chain_summary": "`pgd` (PGD steps 5) then `apgd-ce` (APGD-CE iterations 3)",
        "norm": "linf",
        "seconds": dict(SECONDS),
        "machine": {
            "cpu": "Test CPU 9000",
            "cpu_capability": "AVX2",
            "cpu_threads": 2,
            "python": "3.11.9",
            "packages": {"torch": "2.5.1"},
        },
        "code": {"mmt_ard": "0.1.0", "commit": "abc1234"},
        "plan": {"distill_steps": 40, "eval_limit": 300},
    }
    return DemoFacts(**{**values, **changes})


def demo_folder(folder: Path, with_facts: bool = True, with_gap: bool = True) -> Path:
    """A demo folder by hand: results.json (vit-s original/baseline/mmt-ard, the clean teacher),
    protocol-gap.json for vit-s/mmt-ard, demo-run.json and curves.png."""
    folder.mkdir(parents=True)
    results = {
        "vit-s/original": entry(50.0, {"2/255": 10.0, "4/255": 2.0}),
        "vit-s/baseline": entry(45.0, {"2/255": 25.0, "4/255": 12.0}),
        "vit-s/mmt-ard": entry(47.0, {"2/255": 27.5, "4/255": 14.0}),
        "teachers/clean": entry(60.0, {"2/255": 5.0, "4/255": 1.0}),
    }
    (folder / "results.json").write_text(json.dumps(results))
    if with_gap:
        gap = entry(47.0, AUTOATTACK, CHAIN + "+autoattack", n=8)
        gap["racc_by_attack"] = {
            "pgd": {e: v + 3 for e, v in REDUCED.items()},
            "apgd-t": REDUCED,
            "autoattack": AUTOATTACK,
        }
        (folder / "protocol-gap.json").write_text(json.dumps({"vit-s/mmt-ard": gap}))
    if with_facts:
        facts().save(folder)
    (folder / "curves.png").write_bytes(tiny_png())
    return folder


def write(folder: Path) -> tuple[str, str, str]:
    """The page as the demo writes it: report/report.html, report/report.md and the copy report.md."""
    html = write_report([folder], folder / "report", "MMT-ARD demo (quick)", markdown_copy=folder / "report.md")
    return html.read_text(), (folder / "report" / "report.md").read_text(), (folder / "report.md").read_text()


def test_a_demo_folder_page_shows_everything_the_demo_report_showed(tmp_path):
    page, md, copy = write(demo_folder(tmp_path / "demo"))
    # the intro: world, test images, zero-shot sets, what the reduced chain is
    assert (
        "Built-in shapes world, 300 test images (`builtin:shapes:split=test`); zero-shot sets: combos, outlines." in md
    )
    assert f"**reduced chain** `{CHAIN}`: `pgd` (PGD steps 5) then `apgd-ce`" in md and "*not* AutoAttack" in md
    # Table 1 per student and the teachers, PGD vs the chain, the sanity checks
    for text in ("**Table 1: vit-s**", "**Table 1: teachers**", "| mmt-ard | 4/255 | 47.00 | 14.00 | 61.00 |"):
        assert text in md
    assert "| vit-s/mmt-ard | 2/255 | 29.50 | 27.50 | 2.00 |" in md  # PGD 29.5 vs the chain's 27.5
    assert "**Sanity checks (gradient masking, weak attacks)**" in md and "all checks pass (monotone_in_eps)" in md
    # the reduced chain vs autoattack: reduced first, then autoattack, gap = reduced - autoattack > 0
    assert "**Reduced chain vs the autoattack protocol**" in md
    assert "| model | eps | racc reduced chain | racc + autoattack | gap reduced - autoattack |" in md
    for row in GAP_ROWS:
        assert row in md
    assert "(8 images)" in md and f"`{CHAIN}+autoattack`" in md and "`autoattack` (APGD-CE iterations 100" in md
    # the timings and the machine line
    assert "| stage | seconds (0 = reused) |" in md
    assert "| pretrain-teacher | 12.30 |" in md and "| distill-vit-s-confidence | 0.00 |" in md
    assert "| total | 131.00 |" in md and "**wall time**: 2.2 min" in md and "**source**: mmt-ard demo (quick)" in md
    assert (
        "Machine: Test CPU 9000 (AVX2, 2 threads), GPUs: none; Python 3.11.9; code mmt_ard 0.1.0, commit abc1234." in md
    )
    assert "Packages: torch 2.5.1." in md and 'Plan: `{"distill_steps": 40, "eval_limit": 300}`' in md
    assert "`report/report.html`" in md
    # in the order the demo's report had: PGD gap, protocol gap, sanity, timings, machine
    order = [
        "**Table 1: vit-s**",
        "**Table 1: teachers**",
        "gap PGD - chain",
        GAP_TITLE,
        "**Sanity checks",
        "| stage |",
    ]
    assert [md.index(t) for t in order] == sorted(md.index(t) for t in order)
    assert md.index("| stage |") < md.index("Machine: Test CPU")
    # the HTML page shows the same tables and lines
    assert "<figcaption>Reduced chain vs the autoattack protocol</figcaption>" in page
    for row in GAP_ROWS:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert "".join(f'<td class="{"text" if i == 0 else "num"}">{c}</td>' for i, c in enumerate(cells)) in page
    assert '<td class="text">pretrain-teacher</td><td class="num">12.30</td>' in page
    assert "<figcaption>Run: seconds per stage</figcaption>" in page and "Sanity checks (gradient masking" in page
    assert (
        "<em>not</em> AutoAttack" in page and "<strong>reduced chain</strong> <code>pgd+apgd-ce+apgd-t</code>" in page
    )
    assert "Machine: Test CPU 9000 (AVX2, 2 threads)" in page and "300 test images" in page
    # the copy in the run folder: the same Markdown, its image links reaching into report/
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", copy)
    assert links and all(link.startswith("report/") for link in links)
    assert copy == re.sub(r"(!\[[^\]]*\]\()", r"\1report/", md)
    assert all((tmp_path / "demo" / link).is_file() for link in links)


def test_protocol_gap_without_facts_and_an_evaluate_folder_without_either(tmp_path):
    """protocol-gap.json alone gives the gap table; an evaluate folder gets neither table nor demo lines."""
    run = load_run(demo_folder(tmp_path / "older-demo", with_facts=False))
    ids = [t.id for t in run.tables]
    assert ids.index("pgd-vs-chain") + 1 == ids.index("reduced-chain-vs-autoattack") < ids.index("sanity")
    gap = next(t for t in run.tables if t.id == "reduced-chain-vs-autoattack")
    assert gap.rows == [
        ["vit-s/mmt-ard", e, REDUCED[e], AUTOATTACK[e], round(REDUCED[e] - AUTOATTACK[e], 2)] for e in REDUCED
    ]
    assert "demo-timings" not in ids and not run.intro and not run.provenance
    plain = load_run(demo_folder(tmp_path / "evaluate", with_facts=False, with_gap=False))
    assert plain.meta["source"] == "mmt-ard evaluate" and "reduced-chain-vs-autoattack" not in [
        t.id for t in plain.tables
    ]
    demo = load_run(demo_folder(tmp_path / "demo"))
    assert demo.meta["source"] == "mmt-ard demo (quick)" and demo.tables[-1].id == "demo-timings"


def test_demo_facts_round_trip_and_a_bad_file_names_its_field(tmp_path):
    original = facts()
    assert DemoFacts.from_dict(json.loads(json.dumps(original.to_dict())), "x") == original
    folder = demo_folder(tmp_path / "demo")
    for change, field in (
        ({"seconds": {"evaluate": "fast"}}, "seconds of 'evaluate'"),
        ({"test_images": True}, "'test_images'"),
        ({"quick": 1}, "'quick'"),
        ({"zero_shot": None}, "'zero_shot'"),
        ({"zero_shot": [3]}, "'zero_shot' must list set names"),
        ({"kind": "mmt-ard-experiment"}, "not a demo facts file"),
        ({"version": 99}, "version 99"),
    ):
        (folder / "demo-run.json").write_text(json.dumps({**original.to_dict(), **change}))
        with pytest.raises(UserError, match=re.escape(field)):
            load_run(folder)
    (folder / "demo-run.json").write_text("{not json")
    with pytest.raises(UserError, match="demo-run.json is not readable JSON"):
        load_run(folder)


def test_run_demo_writes_the_page_once_with_the_writer(tmp_path, monkeypatch, capsys):
    """run_demo (its training and evaluation stubbed) records its facts and writes report/report.html,
    report/report.md and report.md from the one writer; it returns report.md as before."""
    out = demo_folder(tmp_path / "demo", with_facts=False)
    results = results_from_dict(json.loads((out / "results.json").read_text()))
    monkeypatch.setattr(demo_run, "_run", lambda out, plan, force: ([], results, dict(SECONDS)))
    monkeypatch.setattr(demo_run, "plot_curves", lambda out, stages, target: None)  # curves.png is there
    plan = DemoPlan.load("quick", device="cpu")
    report = demo_run.run_demo(out, quick=True, plan=plan)
    assert report == out / "report.md" and str(report) in capsys.readouterr().out
    recorded = json.loads((out / "demo-run.json").read_text())
    assert recorded["kind"] == "mmt-ard-demo-run" and recorded["seconds"] == SECONDS
    assert recorded["test_images"] == plan.eval_limit and recorded["chain"] == REDUCED_CHAIN
    assert recorded["zero_shot"] == ["combos", "outlines"] and recorded["plan"]["eval_limit"] == plan.eval_limit
    assert recorded["report"] == "report/report.html" and "cpu" in recorded["machine"]
    md = report.read_text()
    assert md.startswith("# MMT-ARD demo (quick)\n") and GAP_TITLE in md and "| total | 131.00 |" in md
    assert f"Built-in shapes world, {plan.eval_limit} test images" in md and "*not* AutoAttack" in md
    assert (out / "report" / "report.html").is_file() and (out / "table.md").is_file()
    assert md == re.sub(r"(!\[[^\]]*\]\()", r"\1report/", (out / "report" / "report.md").read_text())


def test_inline_marks_become_html():
    assert inline_html("a **b** `c<d>` is *not* e; 2*3*4 and an odd ` tick") == (
        "a <strong>b</strong> <code>c&lt;d&gt;</code> is <em>not</em> e; 2*3*4 and an odd ` tick"
    )


def test_only_reporting_has_a_report_writer():
    """One report writer: no other module defines a ``write_report`` (the bench writes its files with
    ``write_bench_files``, the demo's page comes from reporting)."""
    root = Path(mmt_ard.__file__).parent
    defined = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "write_report"
    ]
    assert defined == ["reporting/writer.py"]
    assert not (root / "demo" / "report.py").exists()


def test_the_demo_page_fits_a_1280_px_window(tmp_path):
    """The demo's paragraphs (a real plan's JSON on one line included) wrap; every table and figure renders."""
    from dataclasses import asdict

    from tests.unit.reporting.test_writer import assert_fits_the_window, rendered

    folder = demo_folder(tmp_path / "demo")
    facts(plan=asdict(DemoPlan.load("default"))).save(folder)
    write(folder)
    counts = rendered(folder / "report" / "report.html", tmp_path / "profile")
    # Table 1 vit-s and teachers, zero-shot, PGD gap, protocol gap, sanity, timings; eps figure, radar, curves
    expected = {"expected-tables": 7, "expected-images": 3, "tables": 7, "images": 3, "broken-images": 0}
    assert {k: counts[k] for k in expected} == expected
    assert_fits_the_window(counts)
