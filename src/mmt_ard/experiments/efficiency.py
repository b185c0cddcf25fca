"""The paper's "2.3x" claim: steps and wall-clock until a run first reaches the single-teacher
baseline's final validation sum-acc, from logged validation curves (METHOD.md section 5)."""

from __future__ import annotations

from typing import Any

from mmt_ard.evaluation.config import eps_key
from mmt_ard.experiments.base import ABLATION_EPS, BASELINE, MMT_ARD, Context, Result
from mmt_ard.experiments.figures import plot_curves
from mmt_ard.experiments.stats import summarize

CURVE_POINTS = 10  # validations per run


def first_reaching(rows: list[dict[str, Any]], key: str, target: float) -> dict[str, Any] | None:
    """The first validation row whose ``key`` is at least ``target`` (None if none is)."""
    return next((r for r in rows if r[key] >= target), None)


def efficiency(ctx: Context) -> Result:
    """Baseline and MMT-ARD with validation curves; per seed, when each first reaches the baseline's final value."""
    student = ctx.preset.ablation_student
    steps = ctx.preset.recipe(student).optim.steps
    # the clean-logit cache off: a cache filled by whichever method ran first would make the second one's
    # seconds cheaper; without it both pay the same clean-teacher forward every step
    every = {"loop.eval_every": max(steps // CURVE_POINTS, 1), "fast.cache_clean_logits": False}
    methods = {"baseline": {**BASELINE, **every}, "mmt-ard": {**MMT_ARD, **every}}
    key = f"sum_acc/{eps_key(ABLATION_EPS)}"
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for label, overrides in methods.items():
        recipe = ctx.preset.recipe(student)
        recipe.eval.eps = [ABLATION_EPS]
        runs = [
            ctx.store.distill(f"{student}-{label}-curve", ctx.store.config(recipe, overrides, s)) for s in ctx.seeds
        ]
        curves[label] = [[r for r in run.metrics() if r.get("split") == "val" and key in r] for run in runs]
    targets = [seed_rows[-1][key] for seed_rows in curves["baseline"]]
    table_rows, reached = [], {}
    for label, seeds in curves.items():
        hits = [first_reaching(rows, key, t) for rows, t in zip(seeds, targets)]
        reached[label] = hits
        got = [h for h in hits if h is not None]
        cell_steps = summarize([h["step"] for h in got]).cell() if got else None
        secs = [h["train_seconds"] for h in got if h.get("train_seconds") is not None]
        cell_secs = summarize(secs).cell() if secs else None
        table_rows.append([label, f"{len(got)} / {len(hits)}", cell_steps, cell_secs])
    pairs = [(b, m) for b, m in zip(reached["baseline"], reached["mmt-ard"]) if b is not None and m is not None]
    speedups = [b["step"] / m["step"] for b, m in pairs]
    time_ratios = [
        b["train_seconds"] / m["train_seconds"] for b, m in pairs if b.get("train_seconds") and m.get("train_seconds")
    ]
    table = {
        "id": "efficiency",
        "title": f"Steps and training seconds to reach the baseline's final validation {key} (student {student})",
        "columns": ["method", "seeds that reach it", "steps", "training seconds"],
        "rows": table_rows,
        "notes": [
            (
                f"Validation every {every['loop.eval_every']} of {steps} steps on the held-out split (never the "
                "test set); the target of each seed is that seed's baseline's final value, so the baseline "
                "reaches it at the latest at its last step. Seconds are this process's training time (validation "
                "excluded, checkpoints included; they restart after --resume). Both methods run the clean teacher "
                "every step (these runs have the clean-logit cache off, so that neither gets a cache the other "
                "filled). Mean ± std over the seeds that reach it."
            )
        ],
    }
    res = Result(tables=[table], data={"targets": targets, "curves": curves})
    if speedups:
        s = summarize(speedups)
        res.summary.append(
            f"MMT-ARD reaches the baseline's final {key} {s.mean:.2f}x ± {s.std:.2f} as fast in steps "
            f"({s.n} seed(s); the paper claims 2.3x). The step resolution is {every['loop.eval_every']}."
        )
        if time_ratios:
            t = summarize(time_ratios)
            res.summary.append(f"In training seconds: {t.mean:.2f}x ± {t.std:.2f}.")
    else:
        res.summary.append(f"MMT-ARD did not reach the baseline's final {key} within {steps} steps in any seed.")
    path = ctx.out / "curves.png"
    plot_curves(curves, key, targets, path)
    res.figures.append(
        {"id": "curves", "title": f"validation {key} against steps and training seconds", "path": path.name}
    )
    return res
