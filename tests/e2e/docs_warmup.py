"""Imported once by tests/e2e/test_docs.py's fork server before it forks the docs' commands.

The heavy imports every command would otherwise redo: the distillation and evaluation code,
TensorBoard's writer, the `transformers` CLIP classes of the `hf` export. Imports only: torch must
not compute here (a thread pool started before a fork can hang the forked children).
"""

import transformers  # noqa: F401
from torch.utils.tensorboard import SummaryWriter  # noqa: F401

import mmt_ard.cli.main
import mmt_ard.distill.run
import mmt_ard.evaluation
import mmt_ard.export

__all__ = ["mmt_ard"]
