"""A run folder: resolved config, code version, metrics (JSONL + TensorBoard), checkpoints.

Layout::

    OUTPUT/
      config.yaml          resolved config, code version, environment (packages, CPU, GPU)
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

import yaml

from mmt_ard.config import save_config, to_dict
from mmt_ard.errors import UserError
from mmt_ard.io import atomic_write_text, code_version, environment, is_main_process, remove_stale_temporaries

log = logging.getLogger(__name__)


class MetricsLogger:
    """Appends metric dicts to ``metrics.jsonl`` and mirrors scalars to TensorBoard (:func:`read_metrics` reads them back)."""

    def __init__(self, folder: Path, tensorboard: bool = True) -> None:
        self.folder = folder
        self.path = folder / "metrics.jsonl"
        self._tb = None
        self._tensorboard = tensorboard

    def _writer(self, purge_step: int | None = None):  # type: ignore[no-untyped-def]
        if self._tb is None and self._tensorboard and is_main_process():
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.folder / "tb"), purge_step=purge_step)
            except ImportError:  # tensorboard is optional at run time
                log.warning("tensorboard is not installed; logging to metrics.jsonl only")
                self._tensorboard = False
        return self._tb

    def resume_at(self, step: int) -> None:
        """Forget rows logged after ``step`` (written before a crash, about to be logged again)."""
        if not is_main_process():
            return
        if self.path.is_file():
            rows = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept = [line for line in rows if json.loads(line).get("step", 0) <= step]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        self._writer(purge_step=step + 1)

    def log(self, step: int, metrics: dict[str, Any], prefix: str = "train") -> None:
        if not is_main_process():
            return
        row = {"step": step, "split": prefix, **metrics}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        writer = self._writer()
        if writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(f"{prefix}/{key}", value, step)

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
        if resume:
            self._check_same_config(cfg)
            if is_main_process() and remove_stale_temporaries(self.checkpoint.parent):
                log.info("removed the partial checkpoint a killed run left in %s", self.checkpoint.parent)
        if overwrite and not resume and is_main_process():
            for name in ("checkpoints", "tb", "metrics.jsonl", "summary.json"):
                target = self.path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        if is_main_process() and not resume:  # a resumed run keeps the config it started with
            self.path.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.path / "config.yaml", extra={"version": code_version(), "environment": environment()})
        self.metrics = MetricsLogger(self.path)

    def _check_same_config(self, cfg: Any) -> None:
        """Resuming with other settings would silently mix two runs: only ``loop.*`` may change."""
        saved_file = self.path / "config.yaml"
        if not saved_file.is_file():
            return
        saved = (yaml.safe_load(saved_file.read_text()) or {}).get("config", {})
        now = to_dict(cfg)
        for key in sorted(set(saved) | set(now)):
            if key in ("loop", "output") or saved.get(key) == now.get(key):
                continue
            raise UserError(
                f"cannot resume {str(self.path)!r} with a different {key!r} than it started with; "
                "resume with the same config (only loop.* may change) or start a new run"
            )

    def close(self) -> None:
        self.metrics.close()


def read_metrics(folder: str | Path) -> list[dict[str, Any]]:
    """The rows of a run folder's ``metrics.jsonl``, in order (none when it has none)."""
    path = Path(folder) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
