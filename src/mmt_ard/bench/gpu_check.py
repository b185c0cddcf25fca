"""The GPU check's summary: the ``cuda`` tests' outcome and the ViT-L-14 bench as one JSON and one table.

``scripts/gpu_check.sh`` runs ``pytest -m cuda`` (JUnit XML) and ``mmt-ard bench --preset vit-l14``
on one GPU, then ``python -m mmt_ard.bench.gpu_check OUT`` writes ``OUT/gpu_check.json`` and
``OUT/gpu_table.md``, the README's GPU table.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from mmt_ard.io import atomic_write_json, atomic_write_text


def test_outcomes(junit_xml: Path) -> dict[str, Any]:
    """Counts and failing test names from pytest's JUnit XML."""
    root = ET.parse(junit_xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out: dict[str, Any] = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "failed": [], "seconds": 0.0}
    for s in suites:
        for key in ("tests", "failures", "errors", "skipped"):
            out[key] += int(s.get(key, 0))
        out["seconds"] += float(s.get("time", 0.0))
        for case in s.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                out["failed"].append(case.get("name"))
    out["passed"] = out["tests"] - out["failures"] - out["errors"] - out["skipped"]
    return out


def summary(bench: dict[str, Any], tests: dict[str, Any]) -> dict[str, Any]:
    """The numbers the README's GPU table shows."""
    rows = []
    for c in bench["configurations"]:
        rows.append(
            {
                "teacher": c["teacher"],
                "student": c["student"],
                "precision": c["precision"],
                "batch": c["batch"],
                "images_per_s": c["images_per_s"],
                "reference_images_per_s": c["reference_images_per_s"],
                "speedup_vs_reference": c["speedup_vs_reference"],
                "loss_check_passed": (c["loss_check"] or {}).get("passed"),
            }
        )
    frozen = bench.get("frozen_forward") or {}
    return {
        "machine": bench["machine"],
        "code": bench.get("code"),
        "tests": tests,
        "steps": rows,
        "bench_note": bench.get("note"),
        "frozen_forward": {k: v["images_per_s"] for k, v in frozen.get("variants", {}).items()},
        "frozen_teacher": frozen.get("teacher"),
        "frozen_batch": frozen.get("batch"),
    }


def table(s: dict[str, Any]) -> str:
    """Markdown: one line of machine and tests, the step table, the frozen-forward line."""
    m, t = s["machine"], s["tests"]
    lines = [
        (
            f"GPU: {m['device_name']} (torch {m['torch_version']}, CUDA {m['cuda_version']}); "
            f"`pytest -m cuda`: {t['passed']} passed, {t['failures'] + t['errors']} failed, {t['skipped']} skipped "
            f"in {t['seconds']:.0f} s."
        ),
        "",
        "| teachers | student | precision | batch | images/s | reference images/s | vs reference | same loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if s.get("bench_note"):
        lines.append(f"| {s['bench_note']} | | | | | | | |")
    for r in s["steps"]:
        ref = r["reference_images_per_s"]
        speed = r["speedup_vs_reference"]
        lines.append(
            f"| {r['teacher']} | {r['student']} | {r['precision']} | {r['batch']} | {r['images_per_s']:.2f} | "
            f"{'-' if ref is None else f'{ref:.2f}'} | {'-' if speed is None else f'{speed:.2f}x'} | "
            f"{'-' if r['loss_check_passed'] is None else ('pass' if r['loss_check_passed'] else 'FAIL')} |"
        )
    if s["frozen_forward"]:
        rates = ", ".join(f"{k} {v:.1f}" for k, v in s["frozen_forward"].items())
        lines += ["", f"Frozen {s['frozen_teacher']} forward, batch {s['frozen_batch']}, images/s: {rates}."]
    return "\n".join(lines) + "\n"


NOT_RUN = {
    "tests": 0,
    "failures": 0,
    "errors": 1,
    "skipped": 0,
    "failed": ["(no JUnit XML: pytest did not finish)"],
    "seconds": 0.0,
    "passed": 0,
}


def write(out: Path) -> str:
    """Read ``out/cuda-tests.xml`` and ``out/bench/bench.json``; write ``gpu_check.json`` and ``gpu_table.md``.

    Either may be missing (a step that timed out): the table then says so instead of losing the other.
    """
    xml, bench_file = out / "cuda-tests.xml", out / "bench" / "bench.json"
    tests = test_outcomes(xml) if xml.is_file() else dict(NOT_RUN)
    if bench_file.is_file():
        bench = json.loads(bench_file.read_text())
    else:
        import torch

        from mmt_ard.bench.results import machine_info

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        bench = {"machine": machine_info(device), "configurations": [], "note": "the bench did not finish"}
    s = summary(bench, tests)
    atomic_write_json(out / "gpu_check.json", s)
    md = table(s)
    atomic_write_text(out / "gpu_table.md", md)
    return md


if __name__ == "__main__":
    print(write(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/gpu-check")))
