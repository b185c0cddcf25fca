"""Training machinery shared by pretrain, finetune and distill."""

from mmt_ard.data.batches import batch_indices, labeled_batch, step_generator
from mmt_ard.training.loop import LoopConfig, resolve_device, train
from mmt_ard.training.optim import OptimConfig, build_optimizer, cosine_lr_factor
from mmt_ard.training.run import MetricsLogger, RunDir

__all__ = [
    "LoopConfig",
    "MetricsLogger",
    "OptimConfig",
    "RunDir",
    "batch_indices",
    "build_optimizer",
    "cosine_lr_factor",
    "labeled_batch",
    "resolve_device",
    "step_generator",
    "train",
]
