"""``mmt-ard evaluate``: its flags, parsed into an :class:`~mmt_ard.evaluation.EvaluateConfig` for
:func:`~mmt_ard.evaluation.run_evaluate` (the library half, in mmt_ard/evaluation/run.py)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from mmt_ard.cli.common import build_config
from mmt_ard.errors import UserError

log = logging.getLogger("mmt_ard")

EVAL_FLAGS = {  # flag -> EvalConfig fields (the same names work as eval.<field>=... overrides)
    "attack": ("attack",),
    "eps": ("eps",),
    "steps": ("pgd.steps",),
    "restarts": ("pgd.restarts",),
    "limit": ("limit",),
    "zero_shot_eps": ("zero_shot_eps",),
}
# flags for the sections of attacks run under their own names: only those the chain names are set
ATTACK_FLAGS = {
    "apgd_iterations": (("apgd-ce", "apgd_ce.iterations"), ("apgd-t", "apgd_t.iterations")),
    "target_classes": (("apgd-t", "apgd_t.targets"), ("fab-t", "fab_t.targets")),
    "square_queries": (("square", "square.queries"),),
}


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``mmt-ard evaluate``."""
    p.add_argument("--model", action="append", help="NAME=ARCH[@WEIGHTS][,vision=PATH] or NAME=EXPORT_FOLDER; repeat")
    p.add_argument("--config", help="YAML preset")
    p.add_argument("--output", help="folder for results.json and results.md")
    p.add_argument("--device", help="auto (default), cpu, cuda (config key device)")
    p.add_argument(
        "--attack",
        help="pgd | apgd-ce | apgd-t | fab-t | square | autoattack | autoattack-standard, or "
        "several joined by '+' (per-sample worst case); the autoattack protocols have fixed settings",
    )
    p.add_argument("--eps", help="comma list of budgets, e.g. 1/255,2/255,4/255")
    p.add_argument("--steps", help="PGD steps (eval.pgd.steps, default 10)")
    p.add_argument("--restarts", help="PGD random restarts (eval.pgd.restarts, default 1)")
    p.add_argument(
        "--apgd-iterations",
        dest="apgd_iterations",
        help="iterations of apgd-ce and apgd-t run under their own names (default 100)",
    )
    p.add_argument(
        "--target-classes",
        dest="target_classes",
        help="target classes of apgd-t and fab-t run under their own names (default 9, capped at C-1)",
    )
    p.add_argument(
        "--square-queries", dest="square_queries", help="queries of square (eval.square.queries, default 5000)"
    )
    p.add_argument("--limit", help="number of evaluation samples (a seeded random subset)")
    p.add_argument("--zero-shot-eps", dest="zero_shot_eps", help="comma list: robust zero-shot at these eps")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="e.g. eval.limit=500 eval.eps=[1/255]")


def run(args: argparse.Namespace) -> None:
    """Build the config (defaults <- preset <- flags <- overrides), add ``--model``s, evaluate, print results.md."""
    from mmt_ard.evaluation import EvaluateConfig, run_evaluate
    from mmt_ard.evaluation.chain import attack_names
    from mmt_ard.models import ModelSpec

    # --device is this command's own `device` key (build_config would write it to loop.device)
    parsed = argparse.Namespace(**{**vars(args), "device": None})
    device = {"device": args.device} if args.device else {}
    chain = attack_names(build_config(EvaluateConfig, parsed, {**device, **eval_values(args)}).eval.attack)
    cfg = build_config(EvaluateConfig, parsed, {**device, **eval_values(args, chain)})
    for text in args.model or []:
        name, spec = ModelSpec.parse(text)
        if name in cfg.models:
            raise UserError(f"two models are named {name!r}; name them: --model NAME=SPEC")
        cfg.models[name] = spec
    run_evaluate(cfg)
    print((Path(cfg.output) / "results.md").read_text())
    log.info("wrote %s/results.json and results.md", cfg.output)


def eval_values(args: argparse.Namespace, chain: list[str] | None = None) -> dict[str, Any]:
    """Flag values as ``eval.*`` overrides; with ``chain``, the attack flags too, for its attacks only."""
    values = {
        f"eval.{key}": getattr(args, flag)
        for flag, keys in EVAL_FLAGS.items()
        for key in keys
        if getattr(args, flag) is not None
    }
    for flag, targets in ATTACK_FLAGS.items() if chain is not None else ():
        if getattr(args, flag) is None:
            continue
        keys = [key for attack, key in targets if attack in chain]
        if not keys:
            raise UserError(
                f"--{flag.replace('_', '-')} sets {' and '.join(a for a, _ in targets)} run under their "
                f"own names, and eval.attack={'+'.join(chain)!r} names none (autoattack and "
                f"autoattack-standard have fixed settings); name them, e.g. --attack "
                f"pgd+{'+'.join(a for a, _ in targets)}"
            )
        values.update({f"eval.{key}": getattr(args, flag) for key in keys})
    return values
