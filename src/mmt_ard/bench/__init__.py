"""``mmt-ard bench``: a measured benchmark of the distillation training step.

Times the optimized step (:class:`~mmt_ard.distill.task.DistillationTask` with its fast path)
against a plain float32 reference step of METHOD.md's algorithm (:mod:`.reference`), checks
that both give the same loss, and relates the achieved FLOP/s to the matrix-multiply rate
measured on the same machine (:mod:`.matmul`).
"""

from mmt_ard.bench.matmul import MatmulRate, matmul_rate
from mmt_ard.bench.measure import count_flops
from mmt_ard.bench.reference import LossCheck, ReferenceStep, check_supported, compare_losses
from mmt_ard.bench.results import machine_info, to_markdown, write_bench_files
from mmt_ard.bench.run import PRESETS, BenchConfig, Preset, run_bench
from mmt_ard.bench.step import BenchModels, Measurement, RandomImages, build_reference, build_task, loss_check, measure

__all__ = [
    "PRESETS",
    "BenchConfig",
    "BenchModels",
    "LossCheck",
    "MatmulRate",
    "Measurement",
    "Preset",
    "RandomImages",
    "ReferenceStep",
    "build_reference",
    "build_task",
    "check_supported",
    "compare_losses",
    "count_flops",
    "loss_check",
    "machine_info",
    "matmul_rate",
    "measure",
    "run_bench",
    "to_markdown",
    "write_bench_files",
]
