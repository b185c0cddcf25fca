"""Clean, robust and zero-shot accuracy of CLIP models (METHOD.md section 4).

Robust accuracy uses PGD on the cross-entropy of the zero-shot logits, in float32 with
autocast off and the model in eval mode. The eps values are attacked in increasing order and a
sample counts as robust at eps only if it also survived every smaller eps: an adversarial example
found inside a smaller ball lies inside the larger one, so this is sound, robust accuracy cannot
rise with eps, and samples already broken are not attacked again. With a deterministic attack
(``random_start=False``) it is never weaker than attacking each eps alone; with random starts the
smaller eps act as extra restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from mmt_ard.attacks import OBJECTIVES, PGDConfig, pgd
from mmt_ard import distributed
from mmt_ard.data import build_dataset, loader
from mmt_ard.data.pipeline import use_model_preprocess
from mmt_ard.errors import ConfigError
from mmt_ard.models import PixelCLIP, TextHeadCache, ZeroShotClassifier

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """What to evaluate. ``eps`` in pixels (write ``2/255``); ``step_size=None`` means eps/4."""

    dataset: str = "builtin:shapes:split=test"
    zero_shot: list[str] = field(
        default_factory=lambda: ["builtin:combos:split=test", "builtin:outlines:split=test"]
    )
    eps: list[float] = field(default_factory=lambda: [1 / 255, 2 / 255, 3 / 255, 4 / 255])
    steps: int = 10
    step_size: float | None = None
    norm: str = "linf"
    random_start: bool = True
    zero_shot_eps: list[float] = field(default_factory=list)
    limit: int | None = None
    batch_size: int = 250
    seed: int = 0
    workers: int = 0  # DataLoader processes decoding images read from disk

    def validate(self) -> None:
        for e in [*self.eps, *self.zero_shot_eps]:
            PGDConfig(norm=self.norm, eps=e, steps=self.steps).validate()  # type: ignore[arg-type]
        for name, values in (("eps", self.eps), ("zero_shot_eps", self.zero_shot_eps)):
            keys = [eps_key(e) for e in values]
            if len(set(keys)) != len(keys):
                raise ConfigError(f"eval.{name} lists the same eps twice: {keys}")
        if self.norm not in ("linf", "l2"):
            raise ConfigError(f"eval norm must be 'linf' or 'l2', got {self.norm!r}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"eval limit must be a positive number of samples, got {self.limit}")


def check_datasets(cfg: EvalConfig) -> None:
    """Build every data set ``cfg`` names now: a bad spec fails before training, not at step 500."""
    for spec in [cfg.dataset, *cfg.zero_shot]:
        build_dataset(spec)


def eps_key(eps: float) -> str:
    """``2/255`` for 0.00784..., else the float as written."""
    k = round(eps * 255)
    if k > 0 and abs(k / 255 - eps) < 1e-9:
        return f"{k}/255"
    return f"{eps:g}"


def pct(hits: int, total: int) -> float:
    return round(100.0 * hits / max(total, 1), 2)


def accuracy_under_attack(
    classifier: ZeroShotClassifier,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    eps_list: list[float],
    cfg: EvalConfig,
    device: torch.device,
    desc: str = "",
) -> tuple[float, dict[str, float]]:
    """Clean accuracy and {eps: robust accuracy} in percent (see module doc for the eps order)."""
    eps_sorted = sorted(eps_list)
    generator = torch.Generator().manual_seed(cfg.seed)
    with strict_float32():
        return _accuracy_under_attack(classifier, data, eps_sorted, cfg, device, desc, generator)


def _accuracy_under_attack(
    classifier: ZeroShotClassifier,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    eps_sorted: list[float],
    cfg: EvalConfig,
    device: torch.device,
    desc: str,
    generator: torch.Generator,
) -> tuple[float, dict[str, float]]:
    total, clean_hits = 0, 0
    robust_hits = {e: 0 for e in eps_sorted}
    for x, y in tqdm(data, desc=desc, leave=False, disable=None):
        x, y = x.to(device), y.to(device)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            alive = classifier(x).argmax(-1) == y
        total += len(y)
        clean_hits += int(alive.sum())
        for e in eps_sorted:
            idx = alive.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            attack = PGDConfig(norm=cfg.norm, eps=e, steps=cfg.steps, step_size=cfg.step_size,  # type: ignore[arg-type]
                               random_start=cfg.random_start)
            xi, yi = x[idx], y[idx]
            objective = OBJECTIVES.get("ce")(classifier, xi, labels=yi)
            x_adv = pgd(classifier, xi, objective, attack, precision="fp32", generator=generator)
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                alive[idx] = classifier(x_adv).argmax(-1) == yi
            robust_hits[e] += int(alive.sum())
    total, clean_hits, *hits = distributed.sum_counts([total, clean_hits, *robust_hits.values()])  # all shards
    robust_hits = dict(zip(robust_hits, hits))
    return pct(clean_hits, total), {eps_key(e): pct(robust_hits[e], total) for e in eps_sorted}


@contextmanager
def strict_float32() -> Iterator[None]:
    """No TF32 in matmuls and convolutions (PyTorch allows it in cuDNN by default on Ampere+)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _data(spec: str, cfg: EvalConfig, clip: PixelCLIP):  # type: ignore[no-untyped-def]
    ds = build_dataset(spec)
    use_model_preprocess(ds, clip)  # the model's own resize and crop, as in training
    subset = ds
    if cfg.limit and cfg.limit < len(ds):  # a seeded random subset: folders are sorted by class
        pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.limit]
        subset = Subset(ds, sorted(pick.tolist()))
    subset = distributed.shard(subset)  # under torchrun each rank evaluates its share
    return ds, loader(subset, batch_size=cfg.batch_size, shuffle=False, seed=cfg.seed, workers=cfg.workers)


def evaluate_model(
    clip: PixelCLIP,
    cfg: EvalConfig,
    heads: TextHeadCache | None = None,
    name: str = "model",
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """``{"acc", "racc": {eps: v}, "sum_acc": {eps: v}, "zero_shot": {set: v}, ...}`` in percent."""
    cfg.validate()
    device = torch.device(device)
    heads = heads or TextHeadCache(None)
    clip = clip.to(device).eval()
    ds, data = _data(cfg.dataset, cfg, clip)
    clf = ZeroShotClassifier(clip, heads.head(clip, ds.classnames, ds.templates)).to(device)
    acc, racc = accuracy_under_attack(clf, data, cfg.eps, cfg, device, desc=f"{name}: {ds.name}")
    result: dict[str, Any] = {
        "acc": acc,
        "racc": racc,
        "sum_acc": {k: round(acc + v, 2) for k, v in racc.items()},
        "zero_shot": {},
    }
    if cfg.zero_shot_eps:
        result["zero_shot_racc"] = {}
    for spec in cfg.zero_shot:
        zds, zdata = _data(spec, cfg, clip)
        zclf = ZeroShotClassifier(clip, heads.head(clip, zds.classnames, zds.templates)).to(device)
        zacc, zracc = accuracy_under_attack(zclf, zdata, cfg.zero_shot_eps, cfg, device, desc=f"{name}: {zds.name}")
        result["zero_shot"][zds.name] = zacc
        if cfg.zero_shot_eps:
            result["zero_shot_racc"][zds.name] = zracc
    return result


def evaluate_models(
    models: Mapping[str, PixelCLIP],
    cfg: EvalConfig,
    heads: TextHeadCache | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, Any]]:
    """:func:`evaluate_model` for each named model, in order."""
    heads = heads or TextHeadCache(None)
    return {name: evaluate_model(m, cfg, heads, name=name, device=device) for name, m in models.items()}
