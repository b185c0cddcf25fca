"""APGD-CE and APGD-T from ``pyautoattack`` (the AutoAttack authors' code) on our classifiers.

Our :class:`~mmt_ard.models.ZeroShotClassifier` already maps [0, 1] images to logits (it normalizes
inside), which is exactly the model AutoAttack expects; this module adds what the reference code
leaves to the caller:

- float32 with autocast off and the model in eval mode, whatever the training precision;
- the global RNG left alone (APGD reseeds ``torch`` with its seed: same seed, same numbers);
- APGD-T's target classes capped at ``C - 1``; APGD-T skipped below 4 classes (the targeted DLR
  loss reads the 4th-largest logit), leaving APGD-CE alone there;
- resumable state: each batch's robust flags and finished attacks go to an AutoAttack
  ``EvaluationState`` JSON file, so an interrupted evaluation skips what it already attacked.
  We drive the state ourselves and read/write it in :class:`ResumableState`: pyautoattack 0.2.0
  writes the set of attacks as a Python repr string and reads back a list, so its own
  ``run_standard_evaluation`` cannot restore a state file it wrote.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.state import EvaluationState

from mmt_ard.evaluation.attacks import EVAL_ATTACKS, AttackContext, still_correct
from mmt_ard.io import atomic_write_json
from mmt_ard.models.clip import ZeroShotClassifier
from mmt_ard.models.frozen import eval_mode

if TYPE_CHECKING:
    from mmt_ard.evaluation.metrics import EvalConfig

log = logging.getLogger(__name__)

AUTOATTACK = ("apgd-ce", "apgd-t")
NORMS = {"linf": "Linf", "l2": "L2"}


class ResumableState(EvaluationState):
    """AutoAttack's evaluation state with a JSON round trip that works, written atomically."""

    def to_disk(self, force: bool = False) -> None:
        if self.path is None:
            return
        flags = self.robust_flags
        atomic_write_json(self.path, {
            "_attacks_to_run": sorted(self.attacks_to_run),
            "path": str(self.path),
            "_run_attacks": sorted(self.run_attacks),
            "_robust_flags": None if flags is None else flags.cpu().tolist(),
            "_clean_accuracy": None if math.isnan(self.clean_accuracy) else self.clean_accuracy,
        })

    @classmethod
    def from_disk(cls, path: Path) -> ResumableState:
        d = json.loads(Path(path).read_text())
        flags = d.get("_robust_flags")
        state = cls(set(d["_attacks_to_run"]), path=Path(path), _run_attacks=set(d.get("_run_attacks", [])))
        state._robust_flags = None if flags is None else torch.tensor(flags, dtype=torch.bool)
        return state


def target_classes(requested: int, num_classes: int) -> int:
    """APGD-T's number of target classes: at most ``C - 1``; 0 (skip) below 4 classes."""
    return 0 if num_classes < 4 else max(0, min(requested, num_classes - 1))


def make_apgd(
    name: str, classifier: ZeroShotClassifier, eps: float, cfg: EvalConfig, device: torch.device
) -> APGDAttack | None:
    """The configured pyautoattack attack for ``apgd-ce`` / ``apgd-t``; None where it cannot run."""
    common = dict(n_iter=cfg.apgd_iterations, norm=NORMS[cfg.norm], n_restarts=max(cfg.restarts, 1), eps=eps,
                  seed=cfg.seed, device=device, logger=log)
    if name == "apgd-ce":
        return APGDAttack(classifier, loss="ce", **common)  # type: ignore[arg-type]
    n_targets = target_classes(cfg.n_target_classes, classifier.num_classes)
    if n_targets == 0:
        log.warning("APGD-T skipped: %d classes (the targeted DLR loss needs at least 4)", classifier.num_classes)
        return None
    return APGDAttack_targeted(classifier, n_target_classes=n_targets, **common)  # type: ignore[arg-type]


@contextmanager
def reference_attack_mode(classifier: ZeroShotClassifier, device: torch.device) -> Iterator[None]:
    """Eval mode, float32, and the global RNG restored afterwards (APGD calls ``manual_seed``)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), eval_mode(classifier), torch.autocast(device.type, enabled=False):
        yield


def _state(ctx: AttackContext, eps: float, names: tuple[str, ...], n: int) -> ResumableState:
    """This batch's AutoAttack state: restored when its file matches, else a fresh one."""
    from mmt_ard.evaluation.metrics import eps_key

    if ctx.state_dir is None:
        return ResumableState(set(names))
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.state_dir / f"{ctx.tag}-b{ctx.batch}-eps{eps_key(eps).replace('/', '_')}.json"
    if path.is_file():
        state = ResumableState.from_disk(path)
        flags = state.robust_flags
        if state.attacks_to_run == set(names) and flags is not None and len(flags) == n:
            log.debug("resuming %s: %s already run", path.name, ", ".join(sorted(state.run_attacks)) or "nothing")
            return state
        log.warning("ignoring AutoAttack state %s: it was made for other attacks or samples", path)
    state = ResumableState(set(names), path=Path(path))
    state.to_disk(force=True)
    return state


def run_apgd(
    names: tuple[str, ...],
    classifier: ZeroShotClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    cfg: EvalConfig,
    ctx: AttackContext,
) -> torch.Tensor:
    """(B,) bool: still correct after the APGD attacks ``names`` in order, each on the survivors."""
    state = _state(ctx, eps, names, len(y))
    robust = state.robust_flags.to(y.device) if state.robust_flags is not None else torch.ones_like(y, dtype=torch.bool)
    with reference_attack_mode(classifier, x.device):
        for name in names:
            if name in state.run_attacks:
                continue
            idx = robust.nonzero().squeeze(1)
            attack = make_apgd(name, classifier, eps, cfg, x.device)
            if attack is not None and len(idx):
                x_adv = attack.perturb(x[idx].float(), y[idx])
                robust[idx] = still_correct(classifier, x_adv, y[idx])
            state.robust_flags = robust.cpu()  # written to disk at once
            state.add_run_attack(name)
    state.to_disk(force=True)
    return robust


def _register(name: str, names: tuple[str, ...]) -> None:
    def attack(classifier, x, y, eps, cfg, generator, ctx):  # type: ignore[no-untyped-def]
        return run_apgd(names, classifier, x, y, eps, cfg, ctx)

    attack.__doc__ = f"{' then '.join(n.upper() for n in names)} (pyautoattack), each on the samples still correct."
    EVAL_ATTACKS.register(name)(attack)


_register("apgd-ce", ("apgd-ce",))
_register("apgd-t", ("apgd-t",))
_register("autoattack", AUTOATTACK)
