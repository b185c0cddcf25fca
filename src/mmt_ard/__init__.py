"""mmt-ard: multi-teacher adversarial robust distillation for CLIP models (arXiv 2511.17448)."""

__version__ = "0.1.0"
