"""Attacks in pixel space: one PGD, pluggable objectives."""

from mmt_ard.attacks.objectives import OBJECTIVES, kl_logits, kl_per_sample
from mmt_ard.attacks.pgd import PGDConfig, eval_mode, pgd, project

__all__ = ["OBJECTIVES", "PGDConfig", "eval_mode", "kl_logits", "kl_per_sample", "pgd", "project"]
