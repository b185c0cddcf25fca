"""``mmt-ard``: pretrain, finetune, distill, evaluate, export, demo, bench, experiment, report, list.

Every training command takes ``--config PRESET``, ``--output DIR`` and ``key.path=value``
overrides, and saves the resolved config beside its run. Bad input exits with code 2 and a
one-line message that says what to fix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from mmt_ard.cli import bench as bench_cli
from mmt_ard.cli import evaluate as evaluate_cli
from mmt_ard.cli import experiment as experiment_cli
from mmt_ard.cli import gather as report_cli
from mmt_ard.cli.common import add_run_args, build_config, print_summary, setup_logging
from mmt_ard.errors import UserError

log = logging.getLogger("mmt_ard")


def _model_values(key: str, text: str | None) -> dict[str, Any]:
    """``--student ARCH@WEIGHTS`` -> ``{"student.arch": ..., "student.pretrained": ..., ...}``."""
    if not text:
        return {}
    from mmt_ard.models import ModelSpec

    spec = ModelSpec.parse(text)[1]
    return {f"{key}.arch": spec.arch, f"{key}.pretrained": spec.pretrained, f"{key}.vision": spec.vision}


def _pretrain(args: argparse.Namespace) -> int:
    from mmt_ard.training.pretrain import PretrainConfig, run_pretrain

    cfg = build_config(PretrainConfig, args, {"model.arch": args.arch} if args.arch else {})
    return print_summary(run_pretrain(cfg, resume=args.resume, overwrite=args.overwrite))


def _finetune(args: argparse.Namespace) -> int:
    from mmt_ard.training.finetune import FinetuneConfig, run_finetune

    values = {"method": args.method} if args.method else {}
    values.update(_model_values("model", args.model))
    cfg = build_config(FinetuneConfig, args, values)
    return print_summary(run_finetune(cfg, resume=args.resume, overwrite=args.overwrite))


def _distill(args: argparse.Namespace) -> int:
    from mmt_ard.distill.run import DistillConfig, run_distill

    values: dict[str, Any] = {}
    for key in ("student", "teacher_clean", "teacher_adv"):
        values.update(_model_values(key, getattr(args, key)))
    if args.strategy:
        values["loss.strategy.name"] = args.strategy
    if args.lora:
        values["lora.enabled"] = True
    cfg = build_config(DistillConfig, args, values)
    return print_summary(run_distill(cfg, resume=args.resume, overwrite=args.overwrite))


def _export(args: argparse.Namespace) -> None:
    from mmt_ard.cli.export import run_export

    out = run_export(args.source, args.format, args.output, device=args.device or "cpu", results=args.results)
    print(f"wrote {args.format} export to {out}")


def _demo(args: argparse.Namespace) -> None:
    from mmt_ard.demo import run_demo

    output = args.output or ("runs/demo-quick" if args.quick else "runs/demo")
    run_demo(output, quick=args.quick, force=args.force, device=args.device or "auto")


def _list(args: argparse.Namespace) -> None:
    from mmt_ard.attacks import OBJECTIVES
    from mmt_ard.cli.common import PRESET_DIR
    from mmt_ard.data import list_builtin_tasks
    from mmt_ard.distill import STRATEGIES
    from mmt_ard.evaluation.chain import EVAL_ATTACKS
    from mmt_ard.export import EXPORT_FORMATS
    from mmt_ard.models import BUILTIN_ARCHS
    from mmt_ard.training.finetune import FINETUNE_METHODS

    print("built-in architectures:", ", ".join(BUILTIN_ARCHS), "(plus every open_clip model)")
    print("built-in datasets:")
    for name, desc in list_builtin_tasks().items():
        print(f"  builtin:{name:10s} {desc}")
    print("weighting strategies:", ", ".join(STRATEGIES.names()))
    print("fine-tuning methods:", ", ".join(FINETUNE_METHODS.names()))
    print("attack objectives:", ", ".join(OBJECTIVES.names()))
    print("evaluation attacks (--attack, join with '+'):", ", ".join(EVAL_ATTACKS.names()))
    print("export formats (mmt-ard export --format):", ", ".join(EXPORT_FORMATS.names()))
    print("presets:", ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmt-ard", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="contrastive CLIP pretraining on image-caption data (the clean teacher)")
    p.add_argument("--arch", help="open_clip architecture (config key model.arch)")
    add_run_args(p)
    p.set_defaults(fn=_pretrain)

    p = sub.add_parser("finetune", help="fine-tune a CLIP vision tower: clean, tecoa, fare, pmg-aft")
    p.add_argument("--method", help="clean | tecoa | fare | pmg-aft (config key method)")
    p.add_argument("--model", help="starting model: ARCH[@WEIGHTS][,vision=PATH] or an export folder")
    add_run_args(p)
    p.set_defaults(fn=_finetune)

    p = sub.add_parser("distill", help="MMT-ARD: distill a student from a clean and an adversarial teacher")
    p.add_argument("--student", help="ARCH[@WEIGHTS][,vision=PATH] or an export folder")
    p.add_argument("--teacher-clean", dest="teacher_clean", help="the clean teacher, same forms")
    p.add_argument("--teacher-adv", dest="teacher_adv", help="the adversarial teacher, same forms")
    p.add_argument("--strategy", help="confidence | adv-only | average | static | adaptive-norm | released-code")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters instead of the whole vision tower")
    add_run_args(p)
    p.set_defaults(fn=_distill)

    p = sub.add_parser("evaluate", help="clean, robust and zero-shot accuracy -> results.json + results.md")
    evaluate_cli.add_evaluate_args(p)
    p.set_defaults(fn=evaluate_cli.run)

    p = sub.add_parser("export", help="write a model as open_clip, vision-state-dict or transformers (hf) files")
    p.add_argument(
        "source", metavar="RUN_OR_MODEL", help="a run folder, an export folder or ARCH@WEIGHTS[,vision=PATH]"
    )
    p.add_argument("--format", required=True, help="open_clip | vision-state-dict | hf (see `mmt-ard list`)")
    p.add_argument("--output", required=True, help="output folder (must be empty or new)")
    p.add_argument("--device", help="cpu (default) or cuda")
    p.add_argument(
        "--results",
        help="RESULTS.json[:NAME] from `mmt-ard evaluate`: the numbers of the model card "
        "(README.md); default: the run's last validation",
    )
    p.set_defaults(fn=_export)

    p = sub.add_parser("demo", help="the whole paper pipeline on the built-in world, offline, on a CPU")
    p.add_argument("--output", help="output folder (default runs/demo, or runs/demo-quick with --quick)")
    p.add_argument("--quick", action="store_true", help="a reduced run in about 2 minutes (CI smoke test)")
    p.add_argument("--force", action="store_true", help="redo every stage instead of reusing finished ones")
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.set_defaults(fn=_demo)

    p = sub.add_parser("bench", help="time the distillation step vs the reference step -> bench.json + bench.md")
    bench_cli.add_bench_args(p)
    p.set_defaults(fn=bench_cli.run)

    p = sub.add_parser("experiment", help="the paper's tables and figures as commands (--list shows them)")
    experiment_cli.add_experiment_args(p)
    p.set_defaults(fn=experiment_cli.run_experiment_command)

    p = sub.add_parser("report", help="one self-contained report.html (+ report.md) from result folders")
    report_cli.add_report_args(p)
    p.set_defaults(fn=report_cli.run_report)

    p = sub.add_parser("list", help="architectures, datasets, strategies, methods, attacks, export formats, presets")
    p.set_defaults(fn=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        code = args.fn(args)
    except UserError as e:
        print(f"mmt-ard: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmt-ard: interrupted; finished checkpoints are kept (continue with --resume)", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
