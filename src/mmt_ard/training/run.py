"""A run folder: resolved config, code version, metrics (JSONL + TensorBoard), checkpoints.

Layout::

    OUTPUT/
      config.yaml          resolved config and code version
      metrics.jsonl        one JSON object per logged step / evaluation
      tb/                  TensorBoard events
      checkpoints/last.pt  training state (atomic; see checkpoint.py)
      ...                  what the command exports (model files, results)

Only the main process writes (rank 0 under torchrun).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from mmt_ard.config import save_config
from mmt_ard.errors import UserError
from mmt_ard.io import code_version, is_main_process

log = logging.getLogger(__name__)


class MetricsLogger:
    """Appends metric dicts to ``metrics.jsonl`` and mirrors scalars to TensorBoard."""

    def __init__(self, folder: Path, tensorboard: bool = True) -> None:
        self.path = folder / "metrics.jsonl"
        self._tb = None
        if tensorboard and is_main_process():
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(folder / "tb"))
            except ImportError:  # tensorboard is optional at run time
                log.warning("tensorboard is not installed; logging to metrics.jsonl only")

    def log(self, step: int, metrics: dict[str, Any], prefix: str = "train") -> None:
        if not is_main_process():
            return
        row = {"step": step, "split": prefix, **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


class RunDir:
    """The folder of one run. Refuses to clobber an existing run unless resuming or told to."""

    def __init__(self, path: str | Path, cfg: Any, resume: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.checkpoint = self.path / "checkpoints" / "last.pt"
        if self.checkpoint.exists() and not (resume or overwrite):
            raise UserError(
                f"output folder {str(self.path)!r} already holds a run; pass --resume to continue it, "
                "--overwrite to start over, or choose another output folder"
            )
        if resume and not self.checkpoint.exists():
            raise UserError(f"nothing to resume: {str(self.checkpoint)!r} does not exist")
        if overwrite and not resume and is_main_process():
            for name in ("checkpoints", "tb", "metrics.jsonl"):
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        if is_main_process():
            self.path.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.path / "config.yaml", extra={"version": code_version()})
        self.metrics = MetricsLogger(self.path)

    def close(self) -> None:
        self.metrics.close()
