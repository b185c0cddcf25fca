"""Training checkpoints: everything needed to continue a run exactly, and nothing executable.

A checkpoint holds the task's model state, optimizer, scheduler, the task's extra state (e.g.
a stateful weighting strategy), the RNG states and the step. It is written atomically and read
back with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmt_ard.errors import CheckpointError, ConfigError
from mmt_ard.io import atomic_torch_save, is_main_process

FORMAT = "mmt-ard-checkpoint/1"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(path: Path, step: int, task: Any, optimizer: Any, scheduler: Any) -> None:
    if not is_main_process():
        return
    atomic_torch_save(
        {
            "format": FORMAT,
            "step": step,
            "model": task.model_state(),
            "extra": task.extra_state(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
        },
        path,
    )


def load_training_state(path: Path, task: Any, optimizer: Any, scheduler: Any) -> int:
    """Restore a checkpoint into ``task``/``optimizer``/``scheduler``; returns the step to start at."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load fails in many types on a damaged file
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}); it may be corrupt. "
            "Start over with --overwrite"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an mmt-ard training checkpoint ({FORMAT})")
    try:
        task.load_model_state(state["model"])
        task.load_extra_state(state["extra"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
    except (KeyError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit this run's models ({first}); "
            "resume with the config it was written with, or start over with --overwrite"
        ) from None
    return int(state["step"])


BEST_FORMAT = "mmt-ard-best/1"


class BestCheckpoint:
    """Model selection: keeps the model state with the highest validation ``metric`` in ``path``.

    ``metric`` is a key of the flattened validation metrics (e.g. ``sum_acc/2/255``); empty means
    no selection (the last step is exported). The file survives ``--resume``, so selection
    continues across interruptions.
    """

    def __init__(self, path: Path, metric: str) -> None:
        self.path, self.metric = path, metric
        self.step: int | None = None
        self.value: float | None = None
        if metric and path.is_file():
            state = self._read()
            self.step, self.value = int(state["step"]), float(state["value"])

    def _read(self) -> dict[str, Any]:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch.load fails in many types on a damaged file
            raise CheckpointError(
                f"{str(self.path)!r} cannot be read ({type(e).__name__}); start over with --overwrite"
            ) from None
        if not isinstance(state, dict) or state.get("format") != BEST_FORMAT:
            raise CheckpointError(f"{str(self.path)!r} is not an mmt-ard best-model checkpoint ({BEST_FORMAT})")
        return state

    def update(self, step: int, metrics: dict[str, Any], task: Any) -> None:
        """Save the model if ``metrics`` beat the best so far (ties keep the earlier step)."""
        if not self.metric:
            return
        if self.metric not in metrics:
            raise ConfigError(
                f"loop.select={self.metric!r} is not a validation metric; choose one of: {', '.join(sorted(metrics))}"
            )
        value = float(metrics[self.metric])
        if self.value is None or value > self.value:
            self.step, self.value = step, value
            if is_main_process():
                atomic_torch_save(
                    {
                        "format": BEST_FORMAT,
                        "step": step,
                        "metric": self.metric,
                        "value": value,
                        "model": task.model_state(),
                    },
                    self.path,
                )

    def restore(self, task: Any, last_step: int) -> dict[str, Any]:
        """Load the best model into ``task`` (unless it is the last step's); what was selected."""
        if not self.metric or self.step is None:
            return {}
        if self.step != last_step and is_main_process():  # rank 0 exports; only it wrote the file
            task.load_model_state(self._read()["model"])
        return {"step": self.step, "metric": self.metric, "value": self.value}
