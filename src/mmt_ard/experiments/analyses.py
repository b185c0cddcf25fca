"""Figure 3 / Table 5 (Grad-CAM) and the Section 4 bound, on the Table 1 students."""

from __future__ import annotations

import torch

from mmt_ard.analysis import bound as bound_lib
from mmt_ard.analysis import gradcam as cam_lib
from mmt_ard.data import build_dataset
from mmt_ard.data.pipeline import use_model_preprocess
from mmt_ard.devices import resolve_device
from mmt_ard.experiments.base import ABLATION_EPS, BASELINE, MMT_ARD, Context, Result, cells, verdict
from mmt_ard.models import ModelSpec, TextHeadCache, ZeroShotClassifier, default_cache_dir, load_clip

TEACHERS = ("teacher-clean", "teacher-adv")
STUDENTS = ("original", "baseline", "mmt-ard")


class _Models:
    """Zero-shot classifiers on the preset's test set, loaded once each, and the first test images."""

    def __init__(self, ctx: Context, n: int) -> None:
        self.device = resolve_device(ctx.store.device)
        self.heads = TextHeadCache(default_cache_dir())
        self.spec, self.n = ctx.preset.test_eval.dataset, n
        self._data: tuple[torch.Tensor, torch.Tensor] | None = None
        self._loaded: dict[tuple[str, str | None, str | None], ZeroShotClassifier] = {}

    def forget(self) -> None:
        """Drop the loaded models (between students: teachers and the undistilled student load once per student)."""
        self._loaded.clear()

    def classifier(self, spec: ModelSpec) -> ZeroShotClassifier:
        key = (spec.arch, spec.pretrained, spec.vision)
        if key not in self._loaded:
            self._loaded[key] = self._load(spec)
        return self._loaded[key]

    def _load(self, spec: ModelSpec) -> ZeroShotClassifier:
        clip = load_clip(spec, self.device).eval()
        if self._data is None:  # the first model's preprocessing (all models of a preset share the input size)
            self.ds = build_dataset(self.spec)
            self.n = min(self.n, len(self.ds))
            use_model_preprocess(self.ds, clip)
            # a seeded random subset: folder data sets are sorted by class
            pick = torch.randperm(len(self.ds), generator=torch.Generator().manual_seed(0))[: self.n].tolist()
            pairs = [self.ds[i] for i in sorted(pick)]
            self._data = (
                torch.stack([p[0] for p in pairs]).to(self.device),
                torch.tensor([int(p[1]) for p in pairs], device=self.device),
            )
        return ZeroShotClassifier(clip, self.heads.head(clip, self.ds.classnames, self.ds.templates)).to(self.device)

    @property
    def data(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._data is not None, "load a classifier first"
        return self._data


def _adversarial(
    clf: ZeroShotClassifier, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, batch: int = 64
) -> torch.Tensor:
    """PGD-10 examples against ``clf`` in batches (one forward/backward over 1000 224-px images would not fit)."""
    gen = torch.Generator().manual_seed(seed)  # generators live on the CPU: pgd draws its start there
    return torch.cat(
        [
            cam_lib.adversarial_examples(clf, x[i : i + batch], y[i : i + batch], eps=eps, generator=gen)
            for i in range(0, x.shape[0], batch)
        ]
    )


def _seed_models(ctx: Context, student: str, seed: int) -> dict[str, ModelSpec]:
    recipe = ctx.preset.recipe(student)
    runs = {
        label: ctx.store.distill(f"{student}-{label}", ctx.store.config(recipe, ov, seed))
        for label, ov in (("baseline", BASELINE), ("mmt-ard", MMT_ARD))
    }
    return {
        "teacher-clean": recipe.teacher_clean,
        "teacher-adv": recipe.teacher_adv,
        "original": ctx.preset.original(student),
        "baseline": runs["baseline"].student,
        "mmt-ard": runs["mmt-ard"].student,
    }


ADVERSARY = {"teacher-adv": "the adversarial teacher itself", "mmt-ard": "the MMT-ARD student"}


def gradcam(ctx: Context) -> Result:
    """Grad-CAM maps (true class's zero-shot logit) of both teachers and three students; L2 to each teacher."""
    res = Result()
    models = _Models(ctx, ctx.preset.analysis_images)
    for student in ctx.preset.students:
        models.forget()
        per_seed: dict[str, dict[str, list[float]]] = {s: {t: [] for t in TEACHERS} for s in STUDENTS}
        for i, seed in enumerate(ctx.seeds):
            clfs = {name: models.classifier(spec) for name, spec in _seed_models(ctx, student, seed).items()}
            x, y = models.data
            # x' for the adversarial teacher's map: PGD against the adversarial teacher itself by default (the same
            # x' for every student compared, made by none of them), or against the MMT-ARD student if asked
            x_adv = _adversarial(clfs[ctx.preset.gradcam_adversary], x, y, ABLATION_EPS, seed)
            maps = cam_lib.model_maps(clfs, x, y, adv_images=x_adv, on_adversarial=["teacher-adv"])
            table = cam_lib.l2_table(maps, list(STUDENTS), list(TEACHERS))
            for s in STUDENTS:
                for t in TEACHERS:
                    per_seed[s][t].append(table[s][t])
            if i == 0:
                path = ctx.out / f"gradcam-{student}.png"
                cam_lib.save_grid(x.cpu(), maps, path, y.cpu(), models.ds.classnames)
                res.figures.append(
                    {
                        "id": f"gradcam-{student}",
                        "path": path.name,
                        "title": f"Grad-CAM, student {student}, seed {seed} (teacher-adv on x' from "
                        f"{ADVERSARY[ctx.preset.gradcam_adversary]})",
                    }
                )
        res.tables.append(
            {
                "id": f"table5-{student}",
                "title": f"Table 5: L2 distance of Grad-CAM maps, student {student}",
                "columns": ["student model", *[f"to {t}" for t in TEACHERS]],
                "rows": [
                    [s, *[cells(per_seed[s][t], per_seed["baseline"][t] if s == "mmt-ard" else None) for t in TEACHERS]]
                    for s in STUDENTS
                ],
                "notes": [
                    (
                        f"Mean over {models.n} test images of ||map_student - map_teacher||_2 (maps in [0, 255] at the "
                        f"input size); smaller = closer attention. Mean ± std over {len(ctx.seeds)} seed(s); † on "
                        "mmt-ard = paired difference to baseline > 2 SE. The adversarial teacher is mapped on x' "
                        f"(PGD-10 at {ABLATION_EPS * 255:g}/255 against {ADVERSARY[ctx.preset.gradcam_adversary]}), all others on x."
                    )
                ],
            }
        )
        closer = [t for t in TEACHERS if _mean(per_seed["mmt-ard"][t]) < _mean(per_seed["baseline"][t])]
        res.summary += [
            verdict(
                f"{student}: L2 to {t}, MMT-ARD minus baseline",
                per_seed["mmt-ard"][t],
                per_seed["baseline"][t],
                "mean L2",
            )
            for t in TEACHERS
        ]
        res.summary.append(
            f"{student}: the MMT-ARD student's maps are closer than the baseline's to "
            f"{', '.join(closer) or 'neither teacher'} on average."
        )
        res.data[student] = per_seed
    return res


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def bound(ctx: Context) -> Result:
    """The Section 4 radius per test sample for each MMT-ARD student: its distribution (an estimate)."""
    res = Result()
    models = _Models(ctx, ctx.preset.bound_images)
    rows = []
    for student in ctx.preset.students:
        models.forget()
        stats: dict[str, list[float]] = {
            "median": [],
            "q05": [],
            "q95": [],
            "positive": [],
            "lipschitz": [],
            "delta": [],
            "avg_margin": [],
        }
        for i, seed in enumerate(ctx.seeds):
            specs = _seed_models(ctx, student, seed)
            s_clf, tc, ta = (models.classifier(specs[k]) for k in ("mmt-ard", "teacher-clean", "teacher-adv"))
            x, y = models.data
            recipe = ctx.preset.recipe(student)
            x_adv = _adversarial(
                s_clf, x, y, recipe.attack.eps, seed
            )  # x' for the weights (CE PGD at the training eps)
            radii = bound_lib.bound_radii(
                s_clf, tc, ta, x, y, bound_lib.BoundOptions(strategy=recipe.loss.strategy), adv_images=x_adv
            )
            summary = bound_lib.summarize(radii)
            for q in ("median", "q05", "q95"):
                stats[q].append(summary["quantiles_255"].get(q, float("nan")))
            stats["positive"].append(100 * summary["fraction_positive"])
            for k in ("lipschitz", "delta", "avg_margin"):
                stats[k].append(summary.get(f"mean_{k}", float("nan")))
            if i == 0:
                path = ctx.out / f"bound-{student}.png"
                bound_lib.plot_distribution(radii, path)
                res.figures.append(
                    {
                        "id": f"bound-{student}",
                        "path": path.name,
                        "title": f"Section 4 radius, MMT-ARD student {student}, seed {seed} (estimate)",
                    }
                )
        rows.append([student, *[cells(stats[k]) for k in stats]])
        res.data[student] = stats
    res.tables.append(
        {
            "id": "bound",
            "title": "Section 4: radius (sum_m w_m gamma_m - 2 Delta) / (2 L_S) of the MMT-ARD students",
            "columns": [
                "student",
                "median radius (1/255)",
                "5% (1/255)",
                "95% (1/255)",
                "% positive",
                "mean L_S",
                "mean Delta",
                "mean sum w gamma",
            ],
            "rows": rows,
            "notes": [
                f"{models.n} test images; mean ± std over {len(ctx.seeds)} seed(s). " + bound_lib.NOTE + ". The "
                "weights w_m are the DIW weights of eqs. (3)-(6), with the adversarial teacher's confidence on x' "
                "(cross-entropy PGD-10 at the training eps against the student); the lambdas are not in them."
            ],
        }
    )
    for student, stats in res.data.items():
        pos = sum(stats["positive"]) / len(stats["positive"])
        res.summary.append(
            f"{student}: {pos:.1f}% of the test images get a positive radius (median "
            f"{sum(stats['median']) / len(stats['median']):.1f}/255); where it is negative the student-"
            "ensemble gap 2 Delta exceeds the teachers' weighted margin and the bound says nothing."
        )
    res.summary.append("The radius is an " + bound_lib.NOTE + ".")
    return res
