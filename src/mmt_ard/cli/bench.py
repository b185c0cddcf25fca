"""``mmt-ard bench``: time the distillation step against the reference step; bench.json + bench.md."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("mmt_ard")


def add_bench_args(p: argparse.ArgumentParser) -> None:
    """The ``bench`` subcommand's flags (values left unset come from ``--preset``)."""
    p.add_argument(
        "--preset",
        default="builtin",
        help="builtin (mmt-vit-t teachers, mmt-vit-s and mmt-rn-s students, batch 64, 3 inner steps) "
        "or vit-l14 (ViT-L-14 teachers, ViT-B-32 student, batch 8, 10 inner steps, 224 px)",
    )
    p.add_argument("--teacher", help="architecture of both teachers (random weights)")
    p.add_argument("--student", action="append", help="student architecture; repeat for several")
    p.add_argument("--batch", type=int, help="batch size")
    p.add_argument("--inner-steps", dest="inner_steps", type=int, help="PGD steps of the training attack")
    p.add_argument("--classes", type=int, help="number of classes of the random zero-shot heads")
    p.add_argument("--image-size", dest="image_size", type=int, help="side of the random training images")
    p.add_argument(
        "--precision",
        default="both",
        help="fp32 | bf16 | bf16-teachers (bf16 teachers, float32 student) | a comma list | both "
        "(fp32,bf16; the default) | all",
    )
    p.add_argument(
        "--force-bf16",
        dest="force_bf16",
        action="store_true",
        help="run the bf16 step of large models even without native bf16 (slow)",
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps before them (default 2)")
    p.add_argument("--strategy", default="confidence", help="weighting strategy (reference: confidence, adv-only)")
    p.add_argument(
        "--objective", default="embedding-l2", help="inner attack objective (reference: embedding-l2, kl-clean-teacher)"
    )
    p.add_argument(
        "--switches",
        default="cache,fuse,channels_last",
        help="fast-path switches to time turned off one at a time; comma list or 'none'",
    )
    p.add_argument(
        "--no-cold",
        dest="cold",
        action="store_false",
        help="do not time the cold step (empty clean-logit cache, as in a first epoch)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=2,
        help="epochs of the whole-run speed-up (one cold epoch, then warm ones; default 2)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the towers in the optimized step")
    p.add_argument(
        "--released-code",
        dest="released",
        action="store_true",
        help="also time the authors' released code's step (momentum KL attack, 50/5 cosine weighting)",
    )
    p.add_argument(
        "--matmul-seconds",
        dest="matmul_seconds",
        type=float,
        default=1.0,
        help="time budget of each matmul-rate probe (default 1)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    p.add_argument("--output", default="runs/bench", help="folder for bench.json and bench.md (default runs/bench)")


def run(args: argparse.Namespace) -> None:
    """Run the benchmark the flags describe, write bench.json and bench.md and print the Markdown."""
    from mmt_ard.bench import BenchConfig, run_bench, write_bench_files

    switches = [] if args.switches in ("", "none") else [s.strip() for s in args.switches.split(",") if s.strip()]
    cfg = BenchConfig(
        preset=args.preset,
        teacher=args.teacher,
        students=list(args.student or []),
        batch=args.batch,
        inner_steps=args.inner_steps,
        classes=args.classes,
        image_size=args.image_size,
        precision=args.precision,
        force_bf16=args.force_bf16,
        device=args.device,
        steps=args.steps,
        warmup=args.warmup,
        strategy=args.strategy,
        objective=args.objective,
        switches=switches,
        compile=args.compile,
        released=args.released,
        cold=args.cold,
        epochs=args.epochs,
        seed=args.seed,
        matmul_seconds=args.matmul_seconds,
    )
    print(write_bench_files(run_bench(cfg), args.output))
    log.info("wrote %s/bench.json and bench.md", args.output)
