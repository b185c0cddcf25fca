"""Is this robustness number trustworthy? Cheap checks for gradient masking and weak attacks.

Run with every robust evaluation and stored as ``ModelResult.sanity[check] = {"ok", "value", ...}``;
a failed check logs a warning with its likely cause and what to try. The checks (after Carlini et
al., "On Evaluating Adversarial Robustness", and AutoAttack's own flags):

======================== ===================================================================
``monotone_in_eps``      robust accuracy does not rise with eps
``large_eps_to_chance``  PGD at a large eps (``sanity_eps``, 64/255) drives accuracy to about chance
``more_steps_not_weaker`` PGD with twice the steps and one more restart is not weaker
``loss_rises``           the attack loss rises over PGD's iterations
``nonzero_gradients``    no evaluated sample has an all-zero input gradient
``autoattack_not_weaker`` the chain's other attacks (APGD, FAB, Square) are not weaker than PGD
======================== ===================================================================

The checks that attack again run on a small subset (``sanity_samples``) at the largest eps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch

from mmt_ard.attacks import OBJECTIVES, pgd
from mmt_ard.evaluation.attacks import AttackTrace, attack_survivors
from mmt_ard.evaluation.chain import EVAL_ATTACKS, AttackContext, attack_names
from mmt_ard.evaluation.config import EvalConfig
from mmt_ard.evaluation.protocols import MIN_CLASSES, base_attacks
from mmt_ard.evaluation.results import Flag
from mmt_ard.models.clip import ZeroShotClassifier

log = logging.getLogger(__name__)


def flag(ok: bool, value: Any, detail: str, cause: str, fix: str) -> Flag:
    """One check's outcome; ``cause`` and ``fix`` are kept only when it failed."""
    out: Flag = {"ok": bool(ok), "value": value, "detail": detail}
    if not ok:
        out.update(cause=cause, fix=fix)
    return out


def check_monotone(racc: dict[str, float], tolerance: float = 0.0) -> Flag:
    """Robust accuracy (in eps order) never rises by more than ``tolerance`` points."""
    values = list(racc.values())
    rises = [f"{a}->{b}" for (a, va), (b, vb) in zip(racc.items(), list(racc.items())[1:]) if vb > va + tolerance]
    return flag(
        not rises,
        values,
        "rises between eps " + ", ".join(rises) if rises else "non-increasing in eps",
        "the attack is not converging or the loss surface is masked (a larger ball should never help)",
        "use more steps and restarts (eval.pgd.steps, eval.pgd.restarts) or eval.attack=pgd+autoattack",
    )


def check_chance(acc_large: float, num_classes: int, margin: float) -> Flag:
    """Accuracy under a huge eps at most ``chance + margin`` percent."""
    chance = 100.0 / num_classes
    return flag(
        acc_large <= chance + margin,
        acc_large,
        f"accuracy {acc_large:.1f}% at the large eps, chance {chance:.1f}%",
        "gradient masking or too few attack steps: an eps this large should break any classifier",
        "check for non-differentiable preprocessing (rounding, JPEG), raise eval.pgd.steps, try eval.attack=autoattack",
    )


def check_stronger(weak: float, strong: float, what: str, tolerance: float) -> Flag:
    """The stronger attack's robust accuracy at most the weaker one's plus ``tolerance`` points."""
    return flag(
        strong <= weak + tolerance,
        {"weaker": weak, "stronger": strong},
        f"{what}: {strong:.1f}% vs {weak:.1f}%",
        "the stronger attack found fewer adversarial examples: the attack is unstable or gradients are masked",
        "raise eval.pgd.steps / eval.pgd.restarts, use a smaller step size, or report the stronger attack",
    )


def check_loss_rises(losses: list[float]) -> Flag:
    """Mean attack loss at the last iteration above the first."""
    ok = len(losses) >= 2 and losses[-1] > losses[0]
    first, last = (losses[0], losses[-1]) if losses else (float("nan"), float("nan"))
    return flag(
        ok,
        [round(v, 4) for v in losses],
        f"mean CE {first:.4f} -> {last:.4f} over {len(losses)} steps",
        "the attack makes no progress: zero or useless gradients (masking) or a step size of zero",
        "check the input gradient (nonzero_gradients), the step size (eval.pgd.step_size) and the model's preprocessing",
    )


def check_gradients(zero: int, checked: int) -> Flag:
    """No evaluated sample with an all-zero input gradient of the CE loss."""
    return flag(
        zero == 0,
        {"zero": zero, "checked": checked},
        f"{zero} of {checked} samples have a zero input gradient",
        "gradient masking (non-differentiable or saturated input processing, e.g. rounding or a hard clamp)",
        "remove the non-differentiable step for evaluation or use a gradient-free / BPDA attack",
    )


def correct_subset(
    clf: ZeroShotClassifier, data: Iterable[tuple[torch.Tensor, torch.Tensor]], n: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Up to ``n`` samples the model classifies correctly, in data order, and the clean accuracy
    (fraction) of the samples scanned to find them."""
    xs, ys, count, seen = [], [], 0, 0
    for x, y in data:
        seen += len(y)
        x, y = x.to(device), y.to(device)
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            keep = clf(x).argmax(-1) == y
        xs.append(x[keep])
        ys.append(y[keep])
        count += int(keep.sum())
        if count >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n], count / max(seen, 1)


def _pct(mask: torch.Tensor) -> float:
    return round(100.0 * float(mask.float().mean()), 2) if len(mask) else 0.0


def _pgd_acc(
    clf: ZeroShotClassifier, x: torch.Tensor, y: torch.Tensor, eps: float, cfg: EvalConfig, seed: int
) -> float:
    gen = torch.Generator().manual_seed(seed)
    return _pct(EVAL_ATTACKS.get("pgd")(clf, x, y, eps, cfg, gen, AttackContext()))


def loss_trace(clf: ZeroShotClassifier, x: torch.Tensor, y: torch.Tensor, eps: float, cfg: EvalConfig) -> list[float]:
    """Mean CE at every PGD iteration (float32, no autocast)."""
    losses: list[float] = []
    objective = OBJECTIVES.get("ce")(clf, x, labels=y)

    def recorded(xa: torch.Tensor) -> torch.Tensor:
        loss = objective(xa)
        losses.append(float(loss.detach().mean()))
        return loss

    attack = replace(cfg.pgd_config(eps), steps=max(cfg.pgd.steps, 2), random_start=False)
    with torch.autocast(x.device.type, enabled=False):
        x_adv = pgd(clf, x, recorded, attack, precision="fp32")
    losses.append(float(objective(x_adv).detach().mean()))
    return losses


def run_sanity_checks(
    clf: ZeroShotClassifier,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    racc: dict[str, float],
    cfg: EvalConfig,
    trace: AttackTrace,
) -> dict[str, Flag]:
    """Every check (see the module table) for one robust evaluation; warns about each failure."""
    flags: dict[str, Flag] = {
        "monotone_in_eps": check_monotone(racc, cfg.sanity_tolerance),
        "nonzero_gradients": check_gradients(trace.zero_grad, trace.grad_checked),
    }
    x, y, clean = correct_subset(clf, data, cfg.sanity_samples, clf.head.device)
    eps = max(cfg.eps)
    if len(y) == 0:
        flags["subset"] = flag(
            False,
            0,
            "no correctly classified sample in the sanity subset",
            "an untrained model",
            "raise eval.sanity_samples",
        )
        return _warn(flags)
    # accuracy of all scanned samples: a constant classifier is at chance, not "100% robust"
    large = round(clean * _pgd_acc(clf, x, y, cfg.sanity_eps, cfg, cfg.seed), 2)
    flags["large_eps_to_chance"] = check_chance(large, clf.num_classes, cfg.sanity_margin)
    few = _pgd_acc(clf, x, y, eps, cfg, cfg.seed)
    more = replace(cfg.pgd, steps=2 * cfg.pgd.steps, restarts=cfg.pgd.restarts + 1)
    many = _pgd_acc(clf, x, y, eps, replace(cfg, pgd=more), cfg.seed + 1)
    flags["more_steps_not_weaker"] = check_stronger(few, many, "PGD with 2x steps and +1 restart", cfg.sanity_tolerance)
    flags["loss_rises"] = check_loss_rises(loss_trace(clf, x, y, eps, cfg))
    others = [
        n
        for n in attack_names(cfg.attack)
        if n != "pgd"  # and can run here (skip_unrunnable)
        and any(clf.num_classes >= MIN_CLASSES[a] for a in base_attacks(n))
    ]
    if others:
        gen = torch.Generator().manual_seed(cfg.seed)
        strong = _pct(attack_survivors(clf, x, y, eps, replace(cfg, attack="+".join(others)), gen))
        flags["autoattack_not_weaker"] = check_stronger(few, strong, f"{'+'.join(others)} vs PGD", cfg.sanity_tolerance)
    return _warn(flags)


def robustness_details(
    clf: ZeroShotClassifier,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    racc: dict[str, float],
    cfg: EvalConfig,
    trace: AttackTrace,
) -> dict[str, Any]:
    """The :class:`~mmt_ard.evaluation.results.ModelResult` fields of a robust evaluation: ``attack``,
    ``protocol``, ``racc_by_attack`` and (when ``cfg.sanity``) ``sanity``; none without eps."""
    if not cfg.eps:
        return {}
    out: dict[str, Any] = {
        "attack": cfg.attack,
        "protocol": cfg.protocol_record(),
        "racc_by_attack": trace.racc_by_attack(sorted(cfg.eps)),
    }
    if cfg.sanity:
        out["sanity"] = run_sanity_checks(clf, data, racc, cfg, trace)
    return out


def _warn(flags: dict[str, Flag]) -> dict[str, Flag]:
    for name, f in flags.items():
        if not f["ok"]:
            log.warning(
                "sanity check %s failed: %s. Likely cause: %s. Try: %s.", name, f["detail"], f["cause"], f["fix"]
            )
    return flags
