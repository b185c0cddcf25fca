"""MMT-ARD distillation: weighting strategies, the task, LoRA students, the run."""

from mmt_ard.distill.lora import LoraConfig, apply_lora, merged_copy
from mmt_ard.distill.strategies import STRATEGIES, DistillLogits, StrategyConfig, build_strategy, kd_kl
from mmt_ard.distill.task import DistillationTask, InnerAttackConfig, LossConfig

__all__ = [
    "STRATEGIES",
    "DistillLogits",
    "DistillationTask",
    "InnerAttackConfig",
    "LoraConfig",
    "LossConfig",
    "StrategyConfig",
    "apply_lora",
    "build_strategy",
    "kd_kl",
    "merged_copy",
]
