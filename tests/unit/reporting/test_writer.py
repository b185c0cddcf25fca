"""`mmt-ard report`: reading result folders, cells, radars, errors, and the page in a real browser."""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from mmt_ard.cli.gather import add_report_args, run_report
from mmt_ard.errors import UserError
from mmt_ard.evaluation.results import results_from_dict, results_to_dict
from mmt_ard.evaluation.tables import evaluation_tables
from mmt_ard.reporting import Image, Section, format_cell, load_run, write_report
from mmt_ard.reporting.evaluation_runs import evaluation_radars
from mmt_ard.reporting.figures import radar_png
from mmt_ard.reporting.html import render_html
from mmt_ard.reporting.model import Radar, Run, Table

PNG = b"\x89PNG\r\n\x1a\n"


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid grey PNG written by hand (no plotting needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))  # filter 0, one byte per pixel
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return PNG + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def experiment(**changes: Any) -> dict[str, Any]:
    """An experiment results.json as the contract describes it: 2 tables, 1 figure, 1 radar."""
    data: dict[str, Any] = {
        "kind": "mmt-ard-experiment",
        "version": 1,
        "experiment": "table1",
        "paper": "Table 1",
        "title": "Table 1: students x {baseline, MMT-ARD} x eps",
        "preset": "builtin",
        "seeds": [0, 1, 2],
        "wall_seconds": 812.3,
        "environment": {"python": "3.11", "gpus": []},
        "tables": [
            {
                "id": "table1-vit-s",
                "title": "ViT-S students",
                "columns": ["method", "eps", "acc", "racc"],
                "rows": [
                    ["baseline", "2/255", {"mean": 30.1, "std": 0.4, "n": 3}, {"mean": 18.2, "std": 0.25, "n": 3}],
                    ["mmt-ard", "2/255", {"mean": 31.0, "std": 0.5, "n": 3, "mark": "†"}, None],
                ],
                "notes": ["† significant paired difference (p < 0.05) vs baseline."],
            },
            {"id": "timing", "title": "Timing", "columns": ["stage", "seconds"], "rows": [["distill", 12]]},
        ],
        "figures": [{"id": "curves", "title": "Training curves", "path": "curves.png"}],
        "radar": [
            {
                "student": "vit-s",
                "axes": ["acc", "racc", "sum-acc", "clip-zero"],
                "series": {"baseline": [30.1, 18.2, 48.3, 22.9], "mmt-ard": [31.0, 19.5, 50.5, 22.8]},
            }
        ],
        "summary": ["MMT-ARD raises robust accuracy by 1.3 points."],
    }
    data.update(changes)
    return data


def write_folder(folder: Path, data: Any, files: dict[str, bytes] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(data if isinstance(data, str) else json.dumps(data))
    for name, content in (files if files is not None else {"curves.png": tiny_png()}).items():
        (folder / name).write_bytes(content)
    return folder


@pytest.fixture(scope="module")
def evaluated() -> dict[str, dict[str, Any]]:
    """Real `evaluate_models` output for two tiny students, plus entries in the same layout for others."""
    import torch

    from mmt_ard.evaluation import EvalConfig, PGDSettings, evaluate_models
    from mmt_ard.models import ModelSpec, load_clip

    torch.manual_seed(0)
    models = {name: load_clip(ModelSpec(arch="mmt-vit-s")) for name in ("vit-s/baseline", "vit-s/mmt-ard")}
    cfg = EvalConfig(
        eps=[1 / 255, 2 / 255],
        pgd=PGDSettings(steps=1),
        limit=16,
        batch_size=16,
        sanity=False,
        zero_shot=["builtin:combos:split=test"],
    )
    results = results_to_dict(evaluate_models(models, cfg))  # as results.json holds them
    results["rn-s/baseline"] = copy.deepcopy(results["vit-s/baseline"])  # no rn-s/mmt-ard: no rn-s radar
    results["teachers/clean"] = copy.deepcopy(results["vit-s/mmt-ard"])
    return results


# ---- cells -------------------------------------------------------------------------------------------------


def test_cells_render_mean_std_marks_and_nulls():
    assert format_cell({"mean": 30.1, "std": 0.4, "n": 3}) == "30.10 ± 0.40"
    assert format_cell({"mean": 31, "std": 0.456, "n": 3, "mark": "†"}) == "31.00 ± 0.46 †"
    assert format_cell({"mean": 31, "std": 0.0, "n": 1}) == "31.00"  # one seed: no spread to show
    assert format_cell(None) == "-"
    assert format_cell(12) == "12" and format_cell(12.345) == "12.35" and format_cell("2/255") == "2/255"


def test_experiment_report_html_and_markdown(tmp_path):
    run_dir = write_folder(tmp_path / "exp", experiment())
    html_path = write_report([run_dir], tmp_path / "out", None)
    page, md = html_path.read_text(), (tmp_path / "out" / "report.md").read_text()
    for text in (page, md):
        assert "30.10 ± 0.40" in text and "31.00 ± 0.50 †" in text and "† significant paired difference" in text
        assert "Table 1: students x {baseline, MMT-ARD} x eps" in text and "13.5 min" in text
    assert "| mmt-ard | 2/255 | 31.00 ± 0.50 † | - |" in md
    assert 'title="n = 3"' in page  # the seed count shows on hover
    # self-contained: every image inline, no URL to fetch
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)="(https?:)?//', page) and "url(" not in page
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert figures == ["exp-racc-vs-eps.png", "exp-radar-vit-s.png", "exp-curves.png"]  # eps, radars, curves
    # the answer first: headline, then figures, then tables (the page and report.md alike)
    for text, figure, table in ((page, "<img", "<table"), (md, "![", "| method |")):
        headline = text.index("baseline 18.2 ± 0.2% robust accuracy at 2/255")
        assert headline < text.index(figure) < text.index(table), "order: headline, figures, tables"
    for name in figures:
        assert (tmp_path / "out" / name).read_bytes().startswith(PNG)


def test_radar_png_is_a_png_with_every_series():
    series = {"baseline": [30.0, 18.0, 48.0], "mmt-ard": [31.0, 19.0, 50.0]}
    radar = Radar(student="vit-s", axes=["acc", "racc", "sum-acc"], series=series)
    data = radar_png(radar)
    assert data.startswith(PNG) and len(data) > 5_000


# ---- bad input ---------------------------------------------------------------------------------------------


def test_missing_figure_is_a_clear_error_and_nothing_is_written(tmp_path):
    run_dir = write_folder(tmp_path / "exp", experiment(), files={})
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("an earlier report")
    with pytest.raises(UserError, match=r"figure file .*curves\.png.* does not exist"):
        write_report([run_dir], out, None)
    assert [p.name for p in out.iterdir()] == ["report.md"] and (out / "report.md").read_text() == "an earlier report"


@pytest.mark.parametrize(
    "data, match",
    [
        (experiment(kind="mmt-ard-sweep"), r"unknown kind 'mmt-ard-sweep'"),
        (experiment(version=7), r"version 7 is not one"),
        ('{"kind": "mmt-ard-experiment", "version": 1,,}', r"not valid JSON .* line 1"),
        ([1, 2, 3], r"not a results file"),
        (experiment(tables=[{"id": "t", "columns": ["a", "b"], "rows": [[1]]}]), r"row 0 has 1 cells for 2 columns"),
        (experiment(tables=[{"id": "t", "columns": ["a"], "rows": [[[1, 2]]]}]), r"column 'a'.*a cell must be"),
        (experiment(tables=[{"id": "t", "columns": ["a"], "rows": [[{"std": 1}]]}]), r"numeric 'mean'"),
        (
            experiment(radar=[{"student": "s", "axes": ["a", "b", "c"], "series": {"x": [1, 2]}}]),
            r"series 'x' must be 3",
        ),
        (experiment(figures=[{"id": "f", "path": "notes.txt"}]), r"not an image type"),
        ({"vit-s/baseline": {"acc": "high", "racc": {}}}, r"acc must be a number"),
        ({"vit-s/baseline": {"acc": 1.0, "racc": {}, "sum_acc": [1]}}, r"sum_acc must be an object"),
    ],
)
def test_bad_results_raise_user_errors(tmp_path, data, match):
    run_dir = write_folder(tmp_path / "run", data)
    with pytest.raises(UserError, match=match):
        load_run(run_dir)


def test_missing_folder_and_missing_results(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="has no results.json"):
        load_run(tmp_path / "empty")


def test_corrupt_png_is_refused(tmp_path):
    run_dir = write_folder(tmp_path / "exp", experiment(), files={"curves.png": b"not a png"})
    with pytest.raises(UserError, match="not a image/png file"):
        write_report([run_dir], tmp_path / "out", None)


# ---- demo / evaluate folders -------------------------------------------------------------------------------


def test_evaluation_results_become_table1_tables(tmp_path, evaluated):
    run = load_run(write_folder(tmp_path / "demo", evaluated))
    assert run.kind == "evaluation" and [f.id for f in run.figures] == ["curves"]
    tables = {t.id: t for t in run.tables}
    # one Table 1 per student, the teachers last; no AutoAttack chain, no sanity checks run
    assert list(tables) == ["table1-vit-s", "table1-rn-s", "table1-teachers", "zero-shot"]
    vit = tables["table1-vit-s"]
    assert vit.columns == ["method", "eps", "acc", "racc", "sum-acc", "clip-zero"]
    base = evaluated["vit-s/baseline"]
    row = next(r for r in vit.rows if r[:2] == ["baseline", "2/255"])
    assert row[2:5] == [base["acc"], base["racc"]["2/255"], base["sum_acc"]["2/255"]]
    assert row[5] == f"{base['zero_shot']['combos']:.2f}*"  # clean zero-shot, marked as in results.md
    assert [r[:2] for r in tables["table1-rn-s"].rows] == [["baseline", "1/255"], ["baseline", "2/255"]]
    assert tables["zero-shot"].columns == ["model", "combos"]
    # the headline per student is read from its table: the same numbers, one seed
    ours = evaluated["vit-s/mmt-ard"]
    assert [h.student for h in run.headlines] == ["vit-s", "rn-s"]
    assert run.headlines[0].text.startswith(
        f"MMT-ARD {ours['racc']['2/255']:.1f}% vs baseline {base['racc']['2/255']:.1f}% robust accuracy at 2/255 "
        f"({ours['racc']['2/255'] - base['racc']['2/255']:+.1f}), clean {ours['acc']:.1f}% vs {base['acc']:.1f}%"
    )
    assert run.headlines[0].text.endswith("One seed: no significance.")
    assert "no MMT-ARD model" in run.headlines[1].text


def test_radar_only_when_baseline_and_mmt_ard_both_exist(evaluated):
    radars = evaluation_radars(results_from_dict(evaluated))
    assert [r.student for r in radars] == ["vit-s"]  # rn-s has only a baseline, teachers are not students
    radar = radars[0]
    assert radar.axes == ["acc", "racc", "sum-acc", "clip-zero*"] and "eps 2/255" in radar.title
    assert radar.series["mmt-ard"][1] == evaluated["vit-s/mmt-ard"]["racc"]["2/255"]
    only_one = {"vit-s/mmt-ard": evaluated["vit-s/mmt-ard"], "rn-s/baseline": evaluated["rn-s/baseline"]}
    assert evaluation_radars(results_from_dict(only_one)) == []


def test_radar_falls_back_to_the_first_eps():
    res = {
        "acc": 40.0,
        "racc": {"1/255": 30.0, "4/255": 10.0},
        "sum_acc": {"1/255": 70.0, "4/255": 50.0},
        "zero_shot_racc": {"combos": {"1/255": 20.0}},
        "zero_shot": {"combos": 25.0},
    }
    radars = evaluation_radars(results_from_dict({"s/baseline": res, "s/mmt-ard": res}))
    assert "eps 1/255" in radars[0].title and radars[0].axes[-1] == "clip-zero"  # robust zero-shot measured
    assert [t.id for t in evaluation_tables(results_from_dict({"s/baseline": res}))] == ["table1-s", "zero-shot"]


# ---- CLI ---------------------------------------------------------------------------------------------------


def test_cli_default_output_is_report_inside_the_first_folder(tmp_path, evaluated, capsys):
    first = write_folder(tmp_path / "demo", evaluated)
    second = write_folder(tmp_path / "exp", experiment())
    parser = argparse.ArgumentParser()
    add_report_args(parser)
    assert run_report(parser.parse_args([str(first), str(second), "--title", "Both"])) == 0
    page = (first / "report" / "report.html").read_text()
    assert "<title>Both</title>" in page and 'href="#demo"' in page and 'href="#exp"' in page
    assert str(first / "report" / "report.html") in capsys.readouterr().out
    with pytest.raises(UserError, match="is the result folder itself"):
        run_report(parser.parse_args([str(first), "--output", str(first)]))


# ---- in a real browser -------------------------------------------------------------------------------------


def chromium() -> str:
    """Debian's chromium; skipped locally when missing, a failure under CI (which installs it)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not on PATH but CI is set: .ci/run installs it (apt-get install chromium)")
    pytest.skip("chromium is not on PATH (apt-get install -y --no-install-recommends chromium)")


WINDOW = (1280, 2000)  # a laptop screen: nothing may be wider than this window


def rendered(page: Path, profile: Path) -> dict[str, Any]:
    """Open ``page`` headless in a 1280 px window and read what its check script found: tables laid out,
    images decoded, elements wider than the window (and which), the page's scroll width."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    check = re.search(r'<p id="render-check"[^>]*>', dom)
    assert check, "the page's check script did not run:\n" + dom[-2000:]
    attrs: dict[str, Any] = {k: int(v) for k, v in re.findall(r'data-([a-z-]+)="(\d+)"', check.group(0))}
    body = dict(re.findall(r'data-(expected-[a-z]+)="(\d+)"', re.search(r"<body[^>]*>", dom).group(0)))
    what = re.search(r'data-overflowing-what="([^"]*)"', check.group(0))
    return {**attrs, **{k: int(v) for k, v in body.items()}, "overflowing-what": what.group(1) if what else "?"}


def assert_fits_the_window(counts: dict[str, Any]) -> None:
    """Nothing overflows horizontally: no element reaches past the window, the page does not scroll sideways."""
    assert 1200 <= counts["viewport-width"] <= WINDOW[0], counts  # the window size took effect
    assert counts["overflowing"] == 0, f"wider than the window: {counts['overflowing-what']}"
    assert counts["scroll-width"] <= counts["viewport-width"], counts


def test_every_table_and_figure_renders_in_a_browser(tmp_path, evaluated):
    demo = write_folder(tmp_path / "demo", evaluated)
    exp = write_folder(tmp_path / "exp", experiment())
    page = write_report([exp, demo], tmp_path / "out", "Browser check")
    counts = rendered(page, tmp_path / "profile")
    # asked for: experiment 2 tables + eps figure + radar + curves.png; demo Table 1 for vit-s, rn-s and the
    # teachers + zero-shot, the eps figure, the vit-s radar and curves.png
    expected = {"expected-tables": 6, "expected-images": 6, "tables": 6, "images": 6, "broken-images": 0}
    assert {k: counts[k] for k in expected} == expected
    assert_fits_the_window(counts)


def demo_like(students: list[str]) -> dict[str, dict[str, Any]]:
    """results.json as the demo writes it, for ``students`` x {original, baseline, mmt-ard} and two teachers:
    four eps, three zero-shot sets with long names, PGD + AutoAttack, a failed sanity check with a long fix."""
    eps = [f"{k}/255" for k in (1, 2, 3, 4)]
    sets = ["combos", "outlines-with-a-rather-long-data-set-name", "imagenet-sketch-v2-zero-shot-templates-80"]
    out = {}
    names = [f"{s}/{m}" for s in students for m in ("original", "baseline", "mmt-ard")]
    for i, name in enumerate(["teachers/clean", "teachers/adversarial", *names]):
        acc = 30.0 + i
        racc = {e: round(acc - 5 * k - i % 3, 2) for k, e in enumerate(eps, 1)}
        out[name] = {
            "acc": acc,
            "racc": racc,
            "sum_acc": {e: acc + r for e, r in racc.items()},
            "zero_shot": {s: 20.0 + i for s in sets},
            "attack": "pgd+autoattack",
            "racc_by_attack": {"pgd": {e: r + 0.5 for e, r in racc.items()}, "autoattack": racc},
            "sanity": {"monotone_in_eps": {"ok": True, "value": list(racc.values()), "detail": "non-increasing"}},
        }
    out[names[-1]]["sanity"]["nonzero_gradients"] = {
        "ok": False,
        "value": {"zero": 40, "checked": 64},
        "detail": "40 of 64 samples have a zero input gradient: " + "the_model_output_saturates_" * 8,
        "cause": "gradient masking by a saturated softmax temperature in the text head",
        "fix": "evaluate with eval.precision=fp32 and check loss.temperature; see docs/evaluation.md#sanity",
    }
    return out


def test_a_report_of_many_students_with_long_names_fits_a_1280_px_window(tmp_path):
    students = ["vit-s", "rn-s", "vit-b-32-quickgelu-laion2b-s34b-b79k-lora-r16-confidence", "convnext-tiny-ft"]
    demo = write_folder(tmp_path / "demo", demo_like(students), {"curves.png": tiny_png(1400, 300)})
    (demo / "report.md").write_text("demo report")
    exp = write_folder(tmp_path / ("a-long-experiment-folder-name-" + "x" * 80), experiment())
    page = write_report([demo, exp], tmp_path / "out", "Many students")
    counts = rendered(page, tmp_path / "profile")
    assert counts["broken-images"] == 0 and counts["images"] == counts["expected-images"] == (1 + 4 + 1) + (
        1 + 1 + 1
    )  # eps, 4 radars, curves; the same for 1 student
    assert counts["tables"] == counts["expected-tables"]
    assert_fits_the_window(counts)
    html = page.read_text()
    assert html.index("vit-b-32-quickgelu-laion2b-s34b-b79k-lora-r16-confidence</strong>: MMT-ARD") < html.index("<img")


def test_the_browser_check_sees_a_table_wider_than_the_window(tmp_path):
    """The layout this replaced: Table 1 with one column group per student, wider than a laptop window
    (mean ± std cells do not wrap); it scrolls in its own box, and the check still reports it."""
    groups = ["vit-s", "rn-s", "vit-s-lora", "vit-b-32", "vit-b-16", "vit-l-14"]
    columns = ["method", "eps", *[f"{g} {c}" for g in groups for c in ("acc", "racc", "sum-acc", "clip-zero")]]
    stat = {"mean": 31.25, "std": 0.4, "n": 3, "mark": "†"}
    wide = Table(id="students", title="Students", columns=columns, rows=[["mmt-ard", "2/255", *[stat] * 24]])
    run = Run(folder=tmp_path, title="wide", kind="evaluation", tables=[wide])
    page = tmp_path / "page.html"
    page.write_text(render_html("wide", [Section(run=run, anchor="wide", images=[])]))
    counts = rendered(page, tmp_path / "profile")
    assert counts["tables"] == 1 and counts["overflowing"] > 0 and "table.results" in counts["overflowing-what"]
    assert counts["scroll-width"] <= counts["viewport-width"]  # the page itself does not scroll sideways


def test_the_browser_check_sees_a_broken_image(tmp_path):
    run = Run(folder=tmp_path, title="broken", kind="experiment")
    bad = Image(file_name="bad.png", title="bad", data=PNG + b"garbage", mime="image/png")
    good = Image(file_name="good.png", title="good", data=tiny_png(), mime="image/png")
    page = tmp_path / "page.html"
    page.write_text(render_html("broken", [Section(run=run, anchor="broken", images=[good, bad])]))
    counts = rendered(page, tmp_path / "profile")
    assert counts["images"] == 1 and counts["broken-images"] == 1
