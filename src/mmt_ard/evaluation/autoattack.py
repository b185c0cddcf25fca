"""APGD-CE, APGD-T, FAB-T and Square from ``pyautoattack`` (the AutoAttack authors' code), and the
named protocols ``autoattack`` and ``autoattack-standard`` built from them (see
:mod:`mmt_ard.evaluation.protocols` for their settings and where they come from).

Our :class:`~mmt_ard.models.ZeroShotClassifier` already maps [0, 1] images to logits (it normalizes
inside), which is exactly the model AutoAttack expects; this module adds what the reference code
leaves to the caller:

- float32 with autocast off and the model in eval mode, whatever the training precision;
- the global RNG left alone (the attacks reseed ``torch`` with their seed: same seed, same numbers);
- targeted attacks' target classes capped at ``C - 1``; APGD-T refused below 4 classes (the targeted
  DLR loss reads the 4th-largest logit) before anything runs, or skipped when the user allows it;
- resumable state: each batch's robust flags and finished attacks go to an AutoAttack
  ``EvaluationState`` JSON file per chain element, with the settings it was made with, so an
  interrupted evaluation skips what it already attacked. We drive the state ourselves and read/write
  it in :class:`ResumableState`: pyautoattack 0.2.0 writes the set of attacks as a Python repr string
  and reads back a list, so its own ``run_standard_evaluation`` cannot restore a state file it wrote.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted
from pyautoattack.fab_pt import FABAttack_PT
from pyautoattack.square import SquareAttack
from pyautoattack.state import EvaluationState

from mmt_ard import distributed
from mmt_ard.evaluation.attacks import still_correct
from mmt_ard.evaluation.chain import EVAL_ATTACKS, AttackContext
from mmt_ard.evaluation.config import EvalConfig, eps_key
from mmt_ard.evaluation.protocols import MIN_CLASSES, PROTOCOLS, base_attacks, describe, settings_for
from mmt_ard.io import atomic_write_json
from mmt_ard.models.clip import ZeroShotClassifier
from mmt_ard.models.frozen import eval_mode

log = logging.getLogger(__name__)

NORMS = {"linf": "Linf", "l2": "L2"}


class ResumableState(EvaluationState):
    """AutoAttack's evaluation state with a JSON round trip that works, written atomically.

    ``settings`` (what :func:`~mmt_ard.evaluation.protocols.describe` says of the chain element) is
    kept beside it: a state made with other settings is not resumed.
    """

    settings: dict | None = None

    def to_disk(self, force: bool = False) -> None:
        if self.path is None:
            return
        flags = self.robust_flags
        atomic_write_json(
            self.path,
            {
                "_attacks_to_run": sorted(self.attacks_to_run),
                "path": str(self.path),
                "_run_attacks": sorted(self.run_attacks),
                "_robust_flags": None if flags is None else flags.cpu().tolist(),
                "_clean_accuracy": None if math.isnan(self.clean_accuracy) else self.clean_accuracy,
                "settings": self.settings,
            },
        )

    @classmethod
    def from_disk(cls, path: Path) -> ResumableState:
        d = json.loads(Path(path).read_text())
        flags = d.get("_robust_flags")
        state = cls(set(d["_attacks_to_run"]), path=Path(path), _run_attacks=set(d.get("_run_attacks", [])))
        state._robust_flags = None if flags is None else torch.tensor(flags, dtype=torch.bool)
        state.settings = d.get("settings")
        return state


def target_classes(requested: int, num_classes: int, minimum: int = 4) -> int:
    """A targeted attack's number of target classes: at most ``C - 1``; 0 (skip) below ``minimum`` classes."""
    return 0 if num_classes < minimum else max(0, min(requested, num_classes - 1))


def make_attack(
    element: str, name: str, classifier: ZeroShotClassifier, eps: float, cfg: EvalConfig, device: torch.device
) -> APGDAttack | FABAttack_PT | SquareAttack | None:
    """pyautoattack's ``name`` with the settings it has inside chain element ``element``; None where it cannot run.

    Constructed as ``AutoAttack`` constructs it (rho 0.75, one EOT pass, Square without the
    rescaled schedule), so a protocol here runs what ``AutoAttack(version=...)`` runs.
    """
    s = settings_for(element, name, cfg.sections())
    norm, seed = NORMS[cfg.norm], cfg.seed
    if name == "apgd-ce":
        return APGDAttack(
            classifier,
            n_iter=s.iterations,
            n_restarts=s.restarts,
            norm=norm,
            eps=eps,  # type: ignore[arg-type]
            loss="ce",
            eot_iter=1,
            rho=0.75,
            seed=seed,
            device=device,
            logger=log,
        )
    if name == "square":
        return SquareAttack(
            classifier,
            p_init=s.p_init,
            n_queries=s.queries,
            eps=eps,
            norm=norm,  # type: ignore[arg-type]
            n_restarts=s.restarts,
            seed=seed,
            verbose=False,
            device=device,
            resc_schedule=False,
        )
    n_targets = target_classes(s.targets, classifier.num_classes, MIN_CLASSES[name])
    if n_targets == 0:
        log.warning(
            "%s skipped: %d classes (it needs at least %d)", name.upper(), classifier.num_classes, MIN_CLASSES[name]
        )
        return None
    if name == "apgd-t":
        return APGDAttack_targeted(
            classifier,
            n_iter=s.iterations,
            n_restarts=s.restarts,
            norm=norm,  # type: ignore[arg-type]
            eps=eps,
            n_target_classes=n_targets,
            eot_iter=1,
            rho=0.75,
            seed=seed,
            device=device,
            logger=log,
        )
    return FABAttack_PT(
        classifier,
        n_restarts=s.restarts,
        n_iter=s.iterations,
        eps=eps,
        seed=seed,  # type: ignore[arg-type]
        norm=norm,
        verbose=False,
        device=device,
        targeted=True,
        n_target_classes=n_targets,
    )


@contextmanager
def reference_attack_mode(classifier: ZeroShotClassifier, device: torch.device) -> Iterator[None]:
    """Eval mode, float32, and the global RNG restored afterwards (APGD calls ``manual_seed``)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), eval_mode(classifier), torch.autocast(device.type, enabled=False):
        yield


def _state(ctx: AttackContext, element: str, eps: float, cfg: EvalConfig, n: int) -> ResumableState:
    """This batch's state for chain element ``element``: restored when its file matches, else a fresh one."""
    names = set(base_attacks(element))
    if ctx.state_dir is None:
        return ResumableState(names)
    ctx.state_dir.mkdir(parents=True, exist_ok=True)
    shard = f"-r{distributed.rank()}" if distributed.world_size() > 1 else ""  # each rank attacks its own shard
    path = ctx.state_dir / f"{ctx.tag}-{element}{shard}-b{ctx.batch}-eps{eps_key(eps).replace('/', '_')}.json"
    settings = describe([element], cfg.sections(), cfg.norm, cfg.seed)
    if path.is_file():
        state = ResumableState.from_disk(path)
        flags = state.robust_flags
        if state.attacks_to_run == names and state.settings == settings and flags is not None and len(flags) == n:
            log.debug("resuming %s: %s already run", path.name, ", ".join(sorted(state.run_attacks)) or "nothing")
            return state
        log.warning("ignoring AutoAttack state %s: it was made for other attacks, settings or samples", path)
    state = ResumableState(names, path=Path(path))
    state.settings = settings
    state.to_disk(force=True)
    return state


def run_reference(
    element: str,
    classifier: ZeroShotClassifier,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    cfg: EvalConfig,
    ctx: AttackContext,
) -> torch.Tensor:
    """(B,) bool: still correct after the pyautoattack attacks of ``element`` in order, each on the survivors."""
    state = _state(ctx, element, eps, cfg, len(y))
    robust = state.robust_flags.to(y.device) if state.robust_flags is not None else torch.ones_like(y, dtype=torch.bool)
    with reference_attack_mode(classifier, x.device):
        for name in base_attacks(element):
            if name in state.run_attacks:
                continue
            idx = robust.nonzero().squeeze(1)
            attack = make_attack(element, name, classifier, eps, cfg, x.device)
            if attack is not None and len(idx):
                x_adv = attack.perturb(x[idx].float(), y[idx])
                robust[idx] = still_correct(classifier, x_adv, y[idx])
            state.robust_flags = robust.cpu()  # written to disk at once
            state.add_run_attack(name)
    state.to_disk(force=True)
    return robust


def _register(element: str) -> None:
    def attack(classifier, x, y, eps, cfg, generator, ctx):  # type: ignore[no-untyped-def]
        return run_reference(element, classifier, x, y, eps, cfg, ctx)

    inner = " then ".join(a.upper() for a in base_attacks(element))
    attack.__doc__ = (
        f"{PROTOCOLS[element].source}: {inner}" if element in PROTOCOLS else f"{inner} (pyautoattack)"
    ) + ", each on the samples still correct."
    EVAL_ATTACKS.register(element)(attack)


for _element in ("apgd-ce", "apgd-t", "fab-t", "square", *PROTOCOLS):
    _register(_element)
