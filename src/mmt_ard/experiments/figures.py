"""Figures of the experiments (matplotlib, Agg): w_adv bands and validation curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_weight_bands(bands: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Mean ``w_adv`` per logged step with its 10-90% band, one line per variant."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, rows in bands.items():
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        line = ax.plot(steps, [r["w_adv"] for r in rows], label=label)[0]
        ax.fill_between(
            steps, [r["w_adv_q10"] for r in rows], [r["w_adv_q90"] for r in rows], color=line.get_color(), alpha=0.15
        )
    ax.set_xlabel("step")
    ax.set_ylabel("w_adv")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(curves: dict[str, list[list[dict[str, Any]]]], key: str, threshold: list[float], path: Path) -> None:
    """Validation ``key`` against step and against training seconds, every seed of every method."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, seeds) in enumerate(curves.items()):
        for j, rows in enumerate(seeds):
            kw = {
                "color": colors[i % len(colors)],
                "marker": "o",
                "markersize": 3,
                "alpha": 0.8,
                "label": label if j == 0 else None,
            }
            axes[0].plot([r["step"] for r in rows], [r[key] for r in rows], **kw)
            axes[1].plot([r.get("train_seconds", float("nan")) for r in rows], [r[key] for r in rows], **kw)
    for ax, xlabel in zip(axes, ("step", "training seconds")):
        for t in threshold:
            ax.axhline(t, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"validation {key}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("dashed: the baseline's final value per seed (the target)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
