"""The demo's report: Table-1 layout, teachers, zero-shot, timings, training curves."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmt_ard.evaluation import EvalConfig, attack_gap_table, markdown_table
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


def write_report(
    out: Path, results: dict[str, Any], plan: Any, eval_cfg: EvalConfig, seconds: dict[str, float], quick: bool,
    html: Path | None = None,
) -> Path:
    """``report.md``: students in the paper's Table-1 layout, then teachers, then timings."""
    env = environment()
    students = {k: v for k, v in results.items() if not k.startswith("teachers/")}
    teachers = {k: v for k, v in results.items() if k.startswith("teachers/")}
    lines = [
        f"# MMT-ARD demo{' (quick)' if quick else ''}",
        "",
        f"Built-in shapes world, {eval_cfg.limit} test images, PGD-{eval_cfg.steps} (L-inf, step eps/4, random start, "
        "float32); zero-shot sets: " + ", ".join(s.split(":")[1] for s in eval_cfg.zero_shot) + ".",
        "Columns per student architecture as in the paper's Table 1. `original` = the pretrained student before "
        "distillation, `baseline` = single adversarial teacher (`adv-only`), `mmt-ard` = both teachers with "
        "confidence weighting.",
        "",
        "## Students",
        "",
        markdown_table(students),
        "## Teachers",
        "",
        markdown_table(teachers),
        "## PGD vs AutoAttack",
        "",
        f"racc above is the per-sample worst case over PGD-{eval_cfg.steps} and then APGD-CE + APGD-T "
        f"({eval_cfg.apgd_iterations} iterations, {eval_cfg.n_target_classes} target class(es): a reduced AutoAttack "
        "sized for a CPU) on the samples PGD left. The gap is how much PGD alone overstates robustness.",
        "",
        attack_gap_table(results),
        sanity_markdown(results),
        "## Run",
        "",
        "| stage | seconds (0 = reused) |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in seconds.items()],
        "",
        f"Machine: {env['cpu']} ({env['cpu_capability']}, {env['cpu_threads']} threads), "
        f"GPUs: {', '.join(env.get('gpus', [])) or 'none'}; Python {env['python']}; code {code_version()}.",
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
