"""``mmt-ard experiment NAME --preset {builtin,paper}``: the paper's tables and figures as commands."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from mmt_ard.errors import UserError

log = logging.getLogger("mmt_ard")


def add_experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="an experiment (see --list) or `all`")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument(
        "--preset",
        default="builtin",
        choices=["builtin", "paper"],
        help="builtin: the built-in world, offline, on a CPU; paper: ViT-L-14 teachers, ImageNet",
    )
    p.add_argument("--seeds", type=int, default=3, help="paired seeds per run (default 3, as the paper)")
    p.add_argument(
        "--output",
        default="runs/experiments",
        help="output folder: NAME/ per experiment, runs/ shared by all (default runs/experiments)",
    )
    p.add_argument(
        "--world",
        help="builtin: folder of the built-in world (default OUTPUT/world; a `mmt-ard demo` "
        "output folder works and is reused)",
    )
    p.add_argument("--quick", action="store_true", help="builtin: the smoke-sized world and runs (minutes)")
    p.add_argument(
        "--students",
        help="comma-separated subset of the preset's students (default: all; the "
        "ablation student, vit-s / vit-b32, must stay)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--teacher-clean", dest="teacher_clean", help="paper: the clean ViT-L-14 teacher (open_clip file)")
    p.add_argument("--teacher-adv", dest="teacher_adv", help="paper: the adversarial ViT-L-14 (vision state dict)")
    p.add_argument("--imagenet", help="paper: ImageNet root with train/, val/ and holdout/ (ImageFolder layout)")
    p.add_argument("--zero-shot-root", dest="zero_shot_root", help="paper: CLIP_benchmark data, one folder per set")
    p.add_argument(
        "--gradcam-adversary",
        dest="gradcam_adversary",
        default="teacher-adv",
        choices=["teacher-adv", "mmt-ard"],
        help="gradcam: whose PGD makes the adversarial teacher's x' (default teacher-adv: the teacher "
        "itself, favouring no student; mmt-ard: the MMT-ARD student)",
    )
    p.add_argument("--no-report", dest="report", action="store_false", help="do not write report.html")


def run_experiment_command(args: argparse.Namespace) -> int:
    from mmt_ard.demo import DemoPlan
    from mmt_ard.experiments.presets import PaperInputs, builtin_preset, paper_preset
    from mmt_ard.experiments.runner import experiment_names, listing, run_experiment

    if args.list:
        print(listing())
        return 0
    if not args.name:
        raise UserError("name an experiment (mmt-ard experiment --list shows them) or `all`")
    names = experiment_names(args.name)
    if args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    output = Path(args.output)
    if args.preset == "paper":
        if args.quick or args.world:
            raise UserError("--quick and --world belong to --preset builtin")
        preset = paper_preset(
            PaperInputs(args.teacher_clean, args.teacher_adv, args.imagenet, args.zero_shot_root, args.device)
        )
    else:
        given = [f for f in ("teacher_clean", "teacher_adv", "imagenet", "zero_shot_root") if getattr(args, f)]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} belongs to --preset paper")
        plan = DemoPlan.quick(args.device) if args.quick else DemoPlan.default(args.device)
        world = Path(args.world) if args.world else output / "world"
        preset = builtin_preset(world, plan, keep_foreign=bool(args.world))
    preset.gradcam_adversary = args.gradcam_adversary
    if args.students:
        preset = preset.only([s.strip() for s in args.students.split(",") if s.strip()])
    t0 = time.perf_counter()
    preset.prepare()
    folders = [run_experiment(n, preset, list(range(args.seeds)), output, args.device) for n in names]
    print(f"\n{len(folders)} experiment(s) finished in {time.perf_counter() - t0:.0f} s:")
    for folder in folders:
        print(f"  {folder / 'tables.md'}")
    if args.report:
        from mmt_ard.experiments.runner import EXPERIMENTS
        from mmt_ard.reporting import write_report

        # every experiment finished in this output folder so far, not only this call's
        done = [output / n for n in EXPERIMENTS if (output / n / "results.json").is_file()]
        report = write_report(done, output / "report", title=f"MMT-ARD experiments ({args.preset})")
        print(f"report: {report}")
    return 0
