"""Training checkpoints: everything needed to continue a run exactly, and nothing executable.

A checkpoint holds the task's model state, optimizer, scheduler, the task's extra state (e.g.
a stateful weighting strategy), the RNG states and the step. It is written atomically and read
back with ``weights_only=True``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmt_ard.errors import CheckpointError
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
    except Exception as e:
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
