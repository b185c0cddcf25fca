"""What keeps a long run alive: stop requests (signals, a time budget) and non-finite steps.

:class:`StopRequests` turns SIGTERM and SIGUSR1 (what SLURM and Kubernetes send before killing a
job) and Ctrl-C into a request that the training loop honours at the end of the current step:
it saves a checkpoint and returns, and the run continues with ``--resume``. A second Ctrl-C
interrupts at once. ``loop.max_time`` asks for the same stop after a wall-clock budget. When the
loop ends because another process of a torchrun job died, SIGTERM stays ignored: torchrun
terminates the survivors 0.1 s after a worker's death, and this process is already on its way
out with an error that says why and how to resume; a SIGTERM then would cut that message off.

:class:`NonFiniteGuard` detects a non-finite loss or gradient on the device, without a host
sync: the flag goes to the fused AdamW step as ``found_inf``, which then leaves parameters and
optimizer state untouched. Counts are read on the host only when the loop logs, and a run
whose steps were non-finite ``max_nonfinite`` times in a row stops with a clear message.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import torch
from typing_extensions import Self

from mmt_ard import distributed
from mmt_ard.errors import UserError

log = logging.getLogger(__name__)

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, name))


class StopRequests:
    """A context that records stop signals instead of dying on them (main thread only)."""

    def __init__(self, max_time: float = 0.0) -> None:
        self.max_time = max_time
        self.signal: int | None = None
        self._start = time.monotonic()
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        peer_lost = exc is not None and distributed.peer_failure(exc)
        for sig, handler in self._saved.items():
            # torchrun's SIGTERM to the survivors of a dead worker must not cut off the error that follows
            signal.signal(sig, signal.SIG_IGN if peer_lost and sig == signal.SIGTERM else handler)
        if peer_lost:
            log.debug("another process of this run died: SIGTERM ignored while this one reports it and exits")
        self._saved.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signal == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal = signum
        log.warning("%s received: saving a checkpoint at the end of this step", signal.Signals(signum).name)

    def reason(self) -> str | None:
        """Why the run should stop now (a signal's name, ``max_time``), or ``None``."""
        if self.signal is not None:
            return signal.Signals(self.signal).name
        if self.max_time > 0 and time.monotonic() - self._start > self.max_time:
            return "max_time"
        return None


class NonFiniteGuard:
    """Device-side bookkeeping of non-finite steps; the host reads it only in :meth:`check`."""

    def __init__(self, device: torch.device, max_in_a_row: int) -> None:
        self.max_in_a_row = max_in_a_row
        self.skipped = torch.zeros((), device=device)
        self.in_a_row = torch.zeros((), device=device)
        self.reported = 0

    def found_inf(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """1.0 where this step's loss or gradient norm is not finite, else 0.0 (no host sync)."""
        bad = (~torch.isfinite(loss.detach()) | ~torch.isfinite(grad_norm.detach())).float()
        self.skipped += bad
        self.in_a_row = (self.in_a_row + bad) * bad
        return bad.to(torch.float32)

    def check(self, step: int, checkpoint: str) -> int:
        """Host sync: logs newly skipped steps, raises after too many in a row; total skipped."""
        skipped, in_a_row = int(self.skipped), int(self.in_a_row)
        if skipped > self.reported:
            log.warning("step %d: %d step(s) skipped so far for a non-finite loss or gradient", step, skipped)
            self.reported = skipped
        if self.max_in_a_row and in_a_row >= self.max_in_a_row:
            raise UserError(
                f"the loss or gradients were not finite for {in_a_row} steps in a row (up to step {step}); "
                f"lower optim.lr or use precision=fp32. The last checkpoint ({checkpoint}) holds the last "
                "good state: continue from it with --resume"
            )
        return skipped
