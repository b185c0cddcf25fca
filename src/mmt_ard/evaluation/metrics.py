"""Clean, robust and zero-shot accuracy of CLIP models (METHOD.md section 4).

Which attacks run is ``EvalConfig.attack`` (see evaluation/attacks.py: PGD, APGD-CE, APGD-T and
AutoAttack, chained per sample); evaluation/sanity.py checks the numbers for gradient masking.

Robust accuracy uses PGD on the cross-entropy of the zero-shot logits, in float32 with
autocast off and the model in eval mode. A sample counts as broken if any PGD iterate (the
random start included) fooled the model, not only the last one. The eps values are attacked in increasing order and a
sample counts as robust at eps only if it also survived every smaller eps: an adversarial example
found inside a smaller ball lies inside the larger one, so this is sound, robust accuracy cannot
rise with eps, and samples already broken are not attacked again. With a deterministic attack
(``random_start=False``) it is never weaker than attacking each eps alone; with random starts the
smaller eps act as extra restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from mmt_ard import distributed
from mmt_ard.data import build_dataset, loader
from mmt_ard.data.pipeline import use_model_preprocess
from mmt_ard.evaluation.attacks import AttackTrace, attack_survivors
from mmt_ard.evaluation.config import EvalConfig, eps_key, pct, unrunnable_attacks
from mmt_ard.evaluation.protocols import MIN_CLASSES
from mmt_ard.evaluation.results import ModelResult
from mmt_ard.evaluation.sanity import robustness_details
from mmt_ard.models import PixelCLIP, TextHeadCache, ZeroShotClassifier

log = logging.getLogger(__name__)


def check_datasets(cfg: EvalConfig) -> None:
    """Build every data set ``cfg`` names now: a bad spec, or an attack a data set cannot take, fails
    before training or evaluation, not at step 500."""
    for spec in [cfg.dataset, *cfg.zero_shot]:
        ds = build_dataset(spec)
        if spec == cfg.dataset or cfg.zero_shot_eps:  # where attacks run
            unrunnable_attacks(cfg, len(ds.classnames), spec)


def accuracy_under_attack(
    classifier: ZeroShotClassifier,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    eps_list: list[float],
    cfg: EvalConfig,
    device: torch.device,
    desc: str = "",
    trace: AttackTrace | None = None,
) -> tuple[float, dict[str, float]]:
    """Clean accuracy and {eps: robust accuracy} in percent (see module doc for the eps order).

    The attacks are ``cfg.attack`` (see evaluation/attacks.py); ``trace`` collects per-attack counts.
    """
    eps_sorted = sorted(eps_list)
    generator = torch.Generator().manual_seed(cfg.seed)
    with strict_float32():
        return _accuracy_under_attack(classifier, data, eps_sorted, cfg, device, desc, generator, trace)


def _accuracy_under_attack(
    classifier: ZeroShotClassifier,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    eps_sorted: list[float],
    cfg: EvalConfig,
    device: torch.device,
    desc: str,
    generator: torch.Generator,
    trace: AttackTrace | None = None,
) -> tuple[float, dict[str, float]]:
    total, clean_hits = 0, 0
    robust_hits = {e: 0 for e in eps_sorted}
    for x, y in tqdm(data, desc=desc, leave=False, disable=None):
        x, y = x.to(device), y.to(device)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            alive = classifier(x).argmax(-1) == y
        total += len(y)
        clean_hits += int(alive.sum())
        if trace is not None and eps_sorted:
            trace.start_batch(classifier, x[alive], y[alive], len(y))
        for e in eps_sorted:
            idx = alive.nonzero().squeeze(1)
            if len(idx) == 0:
                break
            alive[idx] = attack_survivors(classifier, x[idx], y[idx], e, cfg, generator, trace)
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
) -> ModelResult:
    """Clean, robust (``cfg.eps``) and zero-shot accuracy of ``clip`` in percent, with the attack record
    and the sanity checks (see :class:`~mmt_ard.evaluation.results.ModelResult`)."""
    cfg.validate()
    device = torch.device(device)
    heads = heads or TextHeadCache(None)
    clip = clip.to(device).eval()
    ds, data = _data(cfg.dataset, cfg, clip)
    clf = ZeroShotClassifier(clip, heads.head(clip, ds.classnames, ds.templates)).to(device)
    skipped = unrunnable_attacks(cfg, clf.num_classes, cfg.dataset)
    trace = AttackTrace.for_eval(cfg, f"{name}-{ds.name}")
    acc, racc = accuracy_under_attack(clf, data, cfg.eps, cfg, device, desc=f"{name}: {ds.name}", trace=trace)
    skipped_attacks: dict[str, list[str]] = {ds.name: _skipped(skipped, clf.num_classes)} if skipped else {}
    details = robustness_details(clf, data, racc, cfg, trace)  # attack, protocol, racc_by_attack, sanity
    zero_shot: dict[str, float] = {}
    zero_shot_racc: dict[str, dict[str, float]] = {}
    for spec in cfg.zero_shot:
        zds, zdata = _data(spec, cfg, clip)
        zclf = ZeroShotClassifier(clip, heads.head(clip, zds.classnames, zds.templates)).to(device)
        zskipped = unrunnable_attacks(cfg, zclf.num_classes, spec) if cfg.zero_shot_eps else []
        if zskipped:  # asked for with eval.skip_unrunnable: the numbers are of the chain without them
            skipped_attacks[zds.name] = _skipped(zskipped, zclf.num_classes)
        ztrace = AttackTrace.for_eval(cfg, f"{name}-{zds.name}")  # same attacks; resumable
        zacc, zracc = accuracy_under_attack(
            zclf, zdata, cfg.zero_shot_eps, cfg, device, desc=f"{name}: {zds.name}", trace=ztrace
        )
        zero_shot[zds.name] = zacc
        zero_shot_racc[zds.name] = zracc
    return ModelResult(
        dataset=cfg.dataset,
        n=min(cfg.limit or len(ds), len(ds)),  # evaluated images of cfg.dataset
        acc=acc,
        racc=racc,
        sum_acc={k: round(acc + v, 2) for k, v in racc.items()},
        zero_shot=zero_shot,
        skipped_attacks=skipped_attacks or None,
        zero_shot_racc=zero_shot_racc if cfg.zero_shot_eps else None,
        **details,
    )


def _skipped(names: list[str], num_classes: int) -> list[str]:
    return [f"{n} ({num_classes} classes, needs {MIN_CLASSES[n]})" for n in names]


def evaluate_models(
    models: Mapping[str, PixelCLIP],
    cfg: EvalConfig,
    heads: TextHeadCache | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, ModelResult]:
    """:func:`evaluate_model` for each named model, in order."""
    heads = heads or TextHeadCache(None)
    return {name: evaluate_model(m, cfg, heads, name=name, device=device) for name, m in models.items()}
