"""The demo's report: Table-1 layout, teachers, zero-shot, timings, training curves."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmt_ard.evaluation import EvalConfig, attack_gap_table, markdown_table
from mmt_ard.evaluation.chain import attack_names
from mmt_ard.evaluation.protocols import summary
from mmt_ard.evaluation.sanity import sanity_markdown
from mmt_ard.io import atomic_write_text, code_version, environment


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(out: Path, stages: list[Any], target: Path) -> None:
    """Loss, mean w_adv and validation sum-acc against step for every distillation run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for stage in stages:
        rows = read_metrics(Path(stage.cfg.output))
        train = [r for r in rows if r["split"] == "train"]
        val = [r for r in rows if r["split"] == "val"]
        label = stage.name.removeprefix("distill-")
        axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label=label)
        axes[1].plot([r["step"] for r in train], [r.get("w_adv", float("nan")) for r in train], label=label)
        key = next((k for k in (val[0] if val else {}) if k.startswith("sum_acc/")), None)
        if key:
            axes[2].plot([r["step"] for r in val], [r[key] for r in val], marker="o", label=label)
    titles = ["training loss", "mean w_adv", "validation sum-acc (clean + robust at 2/255)"]
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)


def protocol_gap_lines(gap: dict[str, Any]) -> list[str]:
    """The reduced chain next to the ``autoattack`` protocol run after it on the same images (demo step 5)."""
    if not gap:
        return []
    rows = []
    for name, res in gap.items():
        reduced = res["racc_by_attack"]["apgd-t"]
        rows += [
            f"| {name} | {eps} | {reduced[eps]:.2f} | {worst:.2f} | {reduced[eps] - worst:.2f} |"
            for eps, worst in res["racc"].items()
        ]
    first = next(iter(gap.values()))
    n = first.get("n", "")
    return [
        "## Reduced chain vs the autoattack protocol",
        "",
        (
            f"Measured once, on the MMT-ARD students and a seeded subset of the test images{f' ({n} images)' if n else ''}: "
            f"{first['protocol']['name']}, where `autoattack` = {summary(['autoattack'], {})} runs on what the reduced "
            "chain left. The gap is how much the reduced chain overstates robustness against the protocol the paper, "
            "FARE and the authors report."
        ),
        "",
        "| Model | eps | racc reduced chain | racc + autoattack | gap |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def write_report(
    out: Path,
    results: dict[str, Any],
    plan: Any,
    eval_cfg: EvalConfig,
    seconds: dict[str, float],
    quick: bool,
    html: Path | None = None,
    gap: dict[str, Any] | None = None,
) -> Path:
    """``report.md``: students in the paper's Table-1 layout, then teachers, the protocol gap, timings."""
    env = environment()
    students = {k: v for k, v in results.items() if not k.startswith("teachers/")}
    teachers = {k: v for k, v in results.items() if k.startswith("teachers/")}
    lines = [
        f"# MMT-ARD demo{' (quick)' if quick else ''}",
        "",
        f"Built-in shapes world, {eval_cfg.limit} test images; zero-shot sets: "
        + ", ".join(s.split(":")[1] for s in eval_cfg.zero_shot)
        + ".",
        (
            f"racc is the per-sample worst case of the demo's **reduced chain** `{eval_cfg.attack}`: "
            f"{summary(attack_names(eval_cfg.attack), eval_cfg.sections())} (L-inf, float32, eval mode). "
            "It is sized for a CPU and is *not* AutoAttack; how far it is from the `autoattack` protocol is "
            "measured below."
        ),
        (
            "Columns per student architecture as in the paper's Table 1. `original` = the pretrained student before "
            "distillation, `baseline` = single adversarial teacher (`adv-only`), `mmt-ard` = both teachers with "
            "confidence weighting."
        ),
        "",
        "## Students",
        "",
        markdown_table(students),
        "## Teachers",
        "",
        markdown_table(teachers),
        "## PGD vs the reduced chain",
        "",
        "The gap is how much PGD alone overstates robustness against the reduced chain.",
        "",
        attack_gap_table(results),
        *protocol_gap_lines(gap or {}),
        sanity_markdown(results),
        "## Run",
        "",
        "| stage | seconds (0 = reused) |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in seconds.items()],
        "",
        (
            f"Machine: {env['cpu']} ({env['cpu_capability']}, {env['cpu_threads']} threads), "
            f"GPUs: {', '.join(env.get('gpus', [])) or 'none'}; Python {env['python']}; code {code_version()}."
        ),
        "",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in env["packages"].items()) + ".",
        "",
        "Plan: `" + json.dumps(asdict(plan)) + "`",
        "",
        "Training curves: `curves.png`. Raw numbers: `results.json`."
        + (f" The same tables with the Figure 1 radar charts on one page: `{html.relative_to(out)}`." if html else ""),
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
