"""The benchmark's results files: machine facts, ``bench.json`` and its Markdown tables ``bench.md``.

Not a report page (those are :func:`mmt_ard.reporting.write_report`'s): the numbers of one ``mmt-ard bench``
run as JSON and as the Markdown it prints.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

import torch

from mmt_ard.io import atomic_write_json, atomic_write_text
from mmt_ard.precision import bf16_native

SPLIT_COLUMNS = (
    ("data", "data"),
    ("teacher_clean", "T_org"),
    ("attack", "attack"),
    ("teacher_adv", "T_adv"),
    ("student_forward", "S fwd"),
    ("student_backward", "S bwd"),
    ("optimizer", "optim"),
)


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else what :mod:`platform` says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on."""
    cuda = device.type == "cuda"
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_model(),
        "bf16_native": bf16_native(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _num(value: float | None, fmt: str = ".1f", scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, fmt)


def _row(student: str, m: dict[str, Any], speedup: float | None) -> str:
    split = m["split_s"]
    ratio = _num(speedup, ".2f") + ("x" if speedup else "")
    rate = m["images_per_s"]
    cells = [student, m["precision"], m["name"], _num(rate, ".1f" if rate >= 10 else ".3g"), ratio]
    cells += [_num(split.get(key), ".1f", 1e3) for key, _ in SPLIT_COLUMNS]
    cells += [
        _num(m["flops_per_image"], ".3f", 1e-9),
        _num(m["achieved_gflops"]),
        _num(m["matmul_fraction"], ".1f", 100.0),
        _num(m["peak_memory_mb"], ".0f"),
        _num(m["memory_growth_mb"], ".1f"),
    ]
    return "| " + " | ".join(cells) + " |"


def _header() -> list[str]:
    cols = ["student", "precision", "step", "images/s", "vs reference"] + [f"{label} ms" for _, label in SPLIT_COLUMNS]
    cols += ["GFLOP/image", "GFLOP/s", "% of matmul", "peak MB", "growth MB"]
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]


def _check_row(student: str, what: str, chk: dict[str, Any], ok: str, bad: str) -> str:
    differing = "-" if chk.get("x_adv_differing") is None else str(chk["x_adv_differing"])
    return (
        f"| {student} | {what} | {chk['optimized']:.8g} | {chk['reference']:.8g} | {chk['rel_diff']:.2e} | "
        f"{chk['rtol']:.0e} | {differing} | {ok if chk['passed'] else bad} |"
    )


def _frozen_lines(frozen: dict[str, Any] | None) -> list[str]:
    """The frozen teacher's forward per precision (see mmt_ard.bench.frozen)."""
    if not frozen:
        return []
    lines = [
        (
            f"## Frozen teacher forward ({frozen['teacher']}, batch {frozen['batch']}, {frozen['image_size']} px, "
            f"no grad, {frozen['rounds']} timed calls each)"
        ),
        "",
        "| variant | images/s | vs fp32 | max abs logit difference vs fp32 |",
        "|---|---|---|---|",
    ]
    for name, row in frozen["variants"].items():
        rate = row["images_per_s"]
        lines.append(
            f"| {name} | {_num(rate, '.1f' if rate >= 10 else '.3g')} | {_num(row.get('vs_fp32'), '.2f')}x | "
            f"{_num(row.get('max_abs_logit_diff_vs_fp32'), '.3g')} |"
        )
    if frozen.get("bf16_skipped"):
        lines.append(f"| bf16 | skipped | | {frozen['bf16_skipped']} |")
    lines += [
        "",
        (
            "`bf16-autocast`: float32 weights under bf16 autocast, re-cast on every call (how teachers ran "
            "before); `bf16-held`: weights cast to bf16 once, autocast off (how a bf16 distillation runs its "
            "teachers now)."
        ),
        "",
    ]
    return lines


def _run_lines(configs: list[dict[str, Any]]) -> list[str]:
    """Whole-run speed-ups: one cold epoch, then warm ones."""
    rows = [c for c in configs if c.get("run_images_per_s")]
    if not rows:
        return []
    lines = [
        "",
        (f"Whole run of {rows[0]['epochs']} epochs (the first cold, the rest warm), against the reference step:"),
        "",
        "| student | precision | cold step | warm step | whole run |",
        "|---|---|---|---|---|",
    ]
    for c in rows:
        lines.append(
            f"| {c['student']} | {c['precision']} | {_num(c['cold_speedup_vs_reference'], '.2f')}x | "
            f"{_num(c['speedup_vs_reference'], '.2f')}x | {_num(c['run_speedup_vs_reference'], '.2f')}x |"
        )
    return lines


def to_markdown(report: dict[str, Any]) -> str:
    """``bench.md``: machine, setting, matmul ceiling, one table of steps, the loss checks, skips."""
    mach, s, res = report["machine"], report["settings"], report["settings"]["resolved"]
    mm = report["matmul"]
    lines = [
        "# mmt-ard bench: the distillation training step",
        "",
        (
            f"Machine: {mach['cpu_model']} ({mach['cpu_cores']} cores, {mach['torch_threads']} torch threads), "
            f"device {mach['device']} ({mach['device_name']}), torch {mach['torch_version']}, "
            f"native bf16: {'yes' if mach['bf16_native'] else 'no'}."
        ),
        "",
        "Matmul ceiling (best of square `torch.mm` / `F.linear`): "
        + ", ".join(
            f"{p} {_num(r['gflops'])} / {_num(r['linear_gflops'])} GFLOP/s (n={r['size']})" for p, r in mm.items()
        )
        + '; "% of matmul" is relative to the faster of the two.',
        "",
        (
            f"Setting: teachers {res['teacher']}, batch {res['batch']}, {res['inner_steps']} inner PGD steps, "
            f"{res['classes']} classes, {res['image_size']} px, strategy {s['strategy']}, objective {s['objective']}; "
            f"{s['steps']} timed steps after {s['warmup']} warm-up steps and one FLOP-counted step."
        ),
        "",
    ]
    lines += _frozen_lines(report.get("frozen_forward"))
    lines += ["## Training step", ""] + _header()
    shown: set[str] = set()
    for c in report["configurations"]:
        if c["reference"] and c["student"] not in shown:  # once per student: it is float32 only
            lines.append(_row(c["student"], c["reference"], 1.0))
            shown.add(c["student"])
        if c.get("released") and c["student"] + "/released" not in shown:
            ratio = c["released"]["images_per_s"] / c["reference_images_per_s"] if c["reference_images_per_s"] else None
            lines.append(_row(c["student"], c["released"], ratio))
            shown.add(c["student"] + "/released")
        lines.append(_row(c["student"], c["optimized"], c["speedup_vs_reference"]))
        if c.get("cold"):
            lines.append(_row(c["student"], c["cold"], c.get("cold_speedup_vs_reference")))
        for sw in c["switches"].values():
            ratio = sw["images_per_s"] / c["reference_images_per_s"] if c["reference_images_per_s"] else None
            lines.append(_row(c["student"], sw, ratio))
    lines += [
        "",
        (
            "Split columns are milliseconds per step; `optimized` has a warm clean-logit cache (every epoch "
            "after the first), `cold` an empty one (the first epoch); `no-X` rows are the optimized step with "
            "switch X off. "
            '"vs reference" is images/s over the float32 reference step\'s. FLOPs count matrix multiplies, '
            "convolutions and attention (FlopCounterMode) over one whole step, attack included."
        ),
        "",
    ]
    released = [c for c in report["configurations"] if c.get("speedup_vs_released")]
    if released:
        lines += [
            "`released` is the released code's own step (momentum PGD on the clean-teacher KL, the 50/5 cosine "
            "weighting, a third teacher forward; bench/reference.py). The optimized step, as configured above, "
            "against it: "
            + ", ".join(f"{c['student']} {c['precision']} {c['speedup_vs_released']:.2f}x" for c in released)
            + ".",
            "",
        ]
    run = _run_lines(report["configurations"])
    lines += run[1:] + [""] if run else []
    lines += [
        "## Same loss: optimized vs reference (float32, same models, batch and step)",
        "",
        (
            "| student | optimized step | optimized loss | reference loss | relative difference | tolerance "
            "| x' elements differing | result |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    checked: set[str] = set()
    for c in report["configurations"]:
        if c["student"] in checked:  # one float32 check per student, stored with each of its rows
            continue
        checked.add(c["student"])
        if c["loss_check"] is None:
            lines.append(f"| {c['student']} | - | - | - | - | - | - | not checked: {c['reference_unavailable']} |")
            continue
        lines.append(_check_row(c["student"], "warm cache, fused views", c["loss_check"], "pass", "**FAIL**"))
        if c.get("loss_check_channels_last"):
            lines.append(
                _check_row(
                    c["student"],
                    "the same + channels-last",
                    c["loss_check_channels_last"],
                    "pass",
                    "differs (see note)",
                )
            )
    if any(c.get("loss_check_channels_last") for c in report["configurations"]):
        lines += [
            "",
            (
                "The first row per student is the gate. Channels-last convolutions round differently; PGD's "
                "sign step can turn that into a few whole steps in x', which moves the loss beyond rounding, "
                "so the channels-last row is reported, not required."
            ),
        ]
    if report["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- {k['student']} {k['precision']}: {k['reason']}" for k in report["skipped"]]
    return "\n".join(lines) + "\n"


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities as None (strict JSON has no such numbers)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_bench_files(report: dict[str, Any], output: str | Path) -> str:
    """Write ``bench.json`` and ``bench.md`` (:func:`to_markdown`) of ``run_bench``'s ``report`` into
    ``output``; returns the Markdown."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(report)
    atomic_write_json(out / "bench.json", _finite(report))
    atomic_write_text(out / "bench.md", markdown)
    return markdown
