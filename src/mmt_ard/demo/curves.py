"""``curves.png``: the demo's distillations' training curves (loss, mean w_adv, validation sum-acc).

The demo's page (``report/report.html``, ``report.md``) is written by :func:`mmt_ard.reporting.write_report`,
which shows this figure with the run's other figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmt_ard.training.run import read_metrics

__all__ = ["plot_curves"]


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
