"""The paper's Section 4 bound, per sample, as an *estimate* (METHOD.md section 5).

Theorem (paper, eq. 7). With teacher logit maps ``z_m``, convex weights ``w_m``, true-class teacher
margins ``gamma_m(x) = z_m,y(x) - max_{k != y} z_m,k(x)``, the ensemble ``z_ens = sum_m w_m z_m``, the
gap ``Delta(x) = ||z_S(x) - z_ens(x)||_inf`` and every student logit ``L_S``-Lipschitz, the student's
top-1 class stays ``y`` for every perturbation ``||d|| < (sum_m w_m gamma_m - 2 Delta) / (2 L_S)``.

Choices made here, each documented where it is used:

- **Inputs.** The theorem holds at one point x, so both teachers' margins and the ensemble are
  taken on the clean x (in training the adversarial teacher sees x'; that is not this statement).
  The weights may be any convex weights that depend on x: they are the distillation strategy's own
  (DIW by default, :mod:`mmt_ard.distill.strategies`), computed as in training, the adversarial
  teacher's confidence on x' when ``adv_images`` is given, on x otherwise.
- **Margins** are the paper's true-class margins, negative where a teacher is wrong (top-1 minus
  runner-up would claim robustness for a wrong prediction).
- **Norm.** L-inf, the project's threat model; the proof only needs ``|z_c(x+d) - z_c(x)| <= L_S ||d||``
  in the norm the radius is measured in (the paper writes l2; the argument is the same).
- **L_S** is estimated, not bounded: see :func:`lipschitz_estimate`. The estimate is a *lower*
  bound on the student's local Lipschitz constant, so the radius is *optimistic*: an estimate,
  never a certificate. Every output says so (:data:`NOTE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmt_ard.attacks import PGDConfig, eval_mode, pgd
from mmt_ard.distill.strategies import DistillLogits, StrategyConfig, build_strategy, kd_kl
from mmt_ard.errors import ConfigError, UserError

NOTE = (
    "estimate, not a certificate: L_S is a local lower estimate of the student's Lipschitz constant "
    "(largest logit change found by PGD in an L-inf ball), so the radius (sum_m w_m gamma_m - 2 Delta) / (2 L_S) "
    "can overstate the certified radius"
)
QUANTILES = {"q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95}


@dataclass
class BoundOptions:
    """How the weights and ``L_S`` are computed."""

    strategy: StrategyConfig = field(default_factory=StrategyConfig)  # the w_m: DIW ("confidence") by default
    lipschitz_radius: float = 4 / 255  # the L-inf ball around x in which L_S is probed (largest eval eps)
    lipschitz_steps: int = 8  # sign-gradient steps of radius / 4 from x: the boundary after 4
    lipschitz_classes: int = 2  # the student's top-k classes probed, plus the true class
    batch_size: int = 64

    def validate(self) -> None:
        if self.strategy.name == "adaptive-norm":
            raise ConfigError(
                "adaptive-norm weights depend on the training history, not on x; for the bound use "
                "strategy.name=static with the run's final weights"
            )
        if not 0.0 < self.lipschitz_radius <= 1.0:
            raise ConfigError(f"lipschitz_radius must be in (0, 1] (pixels); got {self.lipschitz_radius}")
        for key in ("lipschitz_steps", "lipschitz_classes", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1; got {getattr(self, key)}")


def true_class_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{k != y} z_k`` per sample (B,); negative where the top-1 class is wrong."""
    y = labels.view(-1, 1)
    others = logits.scatter(1, y, float("-inf")).amax(dim=1)
    return logits.gather(1, y).squeeze(1) - others


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), eval_mode(model):
        return model(x).float()


def strategy_weights(
    strategy: StrategyConfig,
    z_student: torch.Tensor,
    z_clean: torch.Tensor,
    z_adv_for_weights: torch.Tensor,
    labels: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(w_adv, w_clean)`` of the distillation strategy, checked to be convex weights."""
    z = DistillLogits(z_student, z_student, z_clean, z_adv_for_weights, labels=labels)
    w_adv, w_clean = build_strategy(strategy).weights(
        z, kd_kl(z_clean, z_student, 1.0), kd_kl(z_adv_for_weights, z_student, 1.0)
    )
    w_adv, w_clean = w_adv.float().expand_as(labels).clone(), w_clean.float().expand_as(labels).clone()
    convex = bool((w_adv >= 0).all() and (w_clean >= 0).all()) and torch.allclose(
        w_adv + w_clean, torch.ones_like(w_adv), atol=1e-4
    )
    if not convex:
        raise ConfigError(
            f"the {strategy.name!r} strategy's weights are not convex (w >= 0, w_adv + w_clean = 1), "
            "which the bound needs; use confidence, static, adv-only or average"
        )
    return w_adv, w_clean


def lipschitz_estimate(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, opts: BoundOptions) -> torch.Tensor:
    """A lower estimate (B,) of the student's local L-inf -> per-logit Lipschitz constant around x.

    For each probed class c (the student's top-k at x and the true class) and each sign s, PGD
    (the project's :func:`~mmt_ard.attacks.pgd`, no random start) maximizes ``s (z_c(x+d) - z_c(x))``
    over ``||d||_inf <= r``, pixels kept in [0, 1]. The estimate is the largest witness ratio
    ``||z(x+d) - z(x)||_inf / ||d||_inf``. Every ratio is attained by a real pair of images, so it can
    only *under*-estimate the Lipschitz constant on that ball; for a linear ``z = W x`` whose
    maximal row is probed it equals ``max_c ||W_c||_1`` exactly. Unprobed classes, local maxima of
    PGD and perturbations larger than ``r`` can all make the true constant larger.
    Why PGD finite differences rather than the gradient at x: a ReLU network's gradient at one
    point says nothing about the kinks inside the ball, and the radius is a statement about a ball.
    """
    z0 = _logits(model, x)  # (B, C)
    k = min(opts.lipschitz_classes, z0.shape[1])
    classes = torch.cat([z0.topk(k, dim=1).indices, labels.view(-1, 1)], dim=1)  # (B, k + 1)
    cfg = PGDConfig(
        norm="linf",
        eps=opts.lipschitz_radius,
        steps=opts.lipschitz_steps,
        step_size=opts.lipschitz_radius / 4,
        random_start=False,
    )
    best = torch.zeros(x.shape[0], device=x.device)
    for j in range(classes.shape[1]):
        c = classes[:, j : j + 1]
        anchor = z0.gather(1, c).squeeze(1)
        for sign in (1.0, -1.0):

            def objective(
                xa: torch.Tensor, c: torch.Tensor = c, anchor: torch.Tensor = anchor, sign: float = sign
            ) -> torch.Tensor:
                return sign * (model(xa).float().gather(1, c).squeeze(1) - anchor)

            with torch.enable_grad():
                xa = pgd(model, x, objective, cfg, precision="fp32")
            change = (_logits(model, xa) - z0).abs().amax(dim=1)  # ||z(x+d) - z(x)||_inf
            step = (xa - x).flatten(1).abs().amax(dim=1)  # ||d||_inf
            ratio = torch.where(step > 0, change / step.clamp_min(1e-12), torch.zeros_like(change))
            best = torch.maximum(best, ratio)
    return best


def _batch_radii(
    student: nn.Module,
    teacher_clean: nn.Module,
    teacher_adv: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor | None,
    opts: BoundOptions,
) -> dict[str, torch.Tensor]:
    z_s, z_clean, z_adv = _logits(student, x), _logits(teacher_clean, x), _logits(teacher_adv, x)
    z_adv_weights = _logits(teacher_adv, x_adv) if x_adv is not None else z_adv  # as training weighs
    w_adv, w_clean = strategy_weights(opts.strategy, z_s, z_clean, z_adv_weights, y)
    z_ens = w_adv[:, None] * z_adv + w_clean[:, None] * z_clean  # (B, C), both teachers on x
    gamma_adv, gamma_clean = true_class_margin(z_adv, y), true_class_margin(z_clean, y)
    avg_margin = w_adv * gamma_adv + w_clean * gamma_clean
    delta = (z_s - z_ens).abs().amax(dim=1)  # L-inf over classes
    lipschitz = lipschitz_estimate(student, x, y, opts)
    return {
        "margin_adv": gamma_adv,
        "margin_clean": gamma_clean,
        "w_adv": w_adv,
        "w_clean": w_clean,
        "avg_margin": avg_margin,
        "ensemble_margin": true_class_margin(z_ens, y),
        "student_margin": true_class_margin(z_s, y),
        "delta": delta,
        "lipschitz": lipschitz,
    }


def bound_radii(
    student: nn.Module,
    teacher_clean: nn.Module,
    teacher_adv: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    options: BoundOptions | None = None,
    adv_images: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The bound's terms per sample: numpy arrays (N,) and the ``note``.

    Keys: ``margin_adv``, ``margin_clean`` (gamma_m, teachers on x), ``w_adv``, ``w_clean``,
    ``avg_margin`` (sum_m w_m gamma_m), ``ensemble_margin``, ``student_margin``, ``delta``,
    ``lipschitz`` (the L_S estimate), ``radius`` (L-inf pixels; +-inf or nan where L_S = 0) and ``note``.
    Models map [0, 1] images to logits on the device of ``images``; they run in eval mode, float32, autocast off.
    ``adv_images`` (x') only enter the weights, as in training.
    """
    opts = options or BoundOptions()
    opts.validate()
    if images.dim() != 4 or labels.shape != (images.shape[0],):
        raise UserError(
            f"images must be (N, 3, H, W) with labels (N,); got {tuple(images.shape)}, {tuple(labels.shape)}"
        )
    if adv_images is not None and adv_images.shape != images.shape:
        raise UserError("adv_images must have the shape of images")
    parts: dict[str, list[torch.Tensor]] = {}
    with torch.autocast(images.device.type, enabled=False):
        for i in range(0, images.shape[0], opts.batch_size):
            sl = slice(i, i + opts.batch_size)
            x_adv = adv_images[sl].float() if adv_images is not None else None
            x, y = images[sl].float(), labels[sl].to(images.device)
            batch = _batch_radii(student, teacher_clean, teacher_adv, x, y, x_adv, opts)
            for key, value in batch.items():
                parts.setdefault(key, []).append(value.detach().cpu().double())
    out: dict[str, Any] = {key: torch.cat(values).numpy() for key, values in parts.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["radius"] = (out["avg_margin"] - 2.0 * out["delta"]) / (2.0 * out["lipschitz"])
    out["note"] = NOTE
    return out


def _radius_array(radii: Mapping[str, Any] | np.ndarray) -> np.ndarray:
    return np.asarray(radii["radius"] if isinstance(radii, Mapping) else radii, dtype=np.float64).reshape(-1)


def summarize(radii: Mapping[str, Any] | np.ndarray) -> dict[str, Any]:
    """Distribution of the radii (L-inf pixels, and ``*_255`` in units of 1/255) with the note.

    Statistics are over finite radii; ``non_finite`` counts the others (L_S estimated as 0).
    ``fraction_positive`` is over all samples.
    """
    r = _radius_array(radii)
    if r.size == 0:
        raise UserError("no radii to summarize")
    finite = r[np.isfinite(r)]
    quantiles = {k: float(np.quantile(finite, q)) for k, q in QUANTILES.items()} if finite.size else {}
    mean = float(finite.mean()) if finite.size else float("nan")
    out: dict[str, Any] = {
        "n": int(r.size),
        "non_finite": int(r.size - finite.size),
        "fraction_positive": float((r > 0).mean()),
        "mean": mean,
        "quantiles": quantiles,
        "mean_255": mean * 255.0,
        "quantiles_255": {k: v * 255.0 for k, v in quantiles.items()},
        "note": NOTE,
    }
    if isinstance(radii, Mapping):
        for key in ("avg_margin", "delta", "lipschitz"):
            if key in radii:
                out[f"mean_{key}"] = float(np.mean(radii[key]))
    return out


def plot_distribution(radii: Mapping[str, Any] | np.ndarray, path: str | Path, bins: int = 30) -> Path:
    """Histogram of the radii in units of 1/255; the title says it is an estimate."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    r = _radius_array(radii)
    finite = r[np.isfinite(r)] * 255.0
    fig = Figure(figsize=(6.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.hist(finite, bins=bins, color="tab:blue")
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_xlabel("radius (L-inf, units of 1/255)")
    ax.set_ylabel("samples")
    ax.set_title("Section 4 radius: estimate, not a certificate (L_S estimated locally)", fontsize=9)
    fig.text(0.01, 0.01, f"{(r > 0).mean():.1%} positive of {r.size}", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
