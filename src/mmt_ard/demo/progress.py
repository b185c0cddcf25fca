"""The demo's terminal: one line per finished stage above an overall bar (stages done, time left)."""

from __future__ import annotations

import logging
from types import TracebackType

from tqdm.auto import tqdm
from typing_extensions import Self

__all__ = ["StageProgress"]

log = logging.getLogger(__name__)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class StageProgress:
    """Counts finished stages: each logs one line (``[3/12] pretrain-vit-s: ...``) and advances the bar.

    The bar (``bar=True``, and only on a terminal) sits at the bottom with the stage in progress and
    the time left, estimated from the stages trained so far (reused ones take no time). Log lines are
    written above it: run it under :func:`mmt_ard.training.progress.log_lines_above_bars`.
    """

    def __init__(self, total: int, bar: bool = True, desc: str = "demo") -> None:
        self.total, self.done, self.desc = total, 0, desc
        self.trained, self.trained_seconds = 0, 0.0
        self.bar = tqdm(
            total=total,
            desc=desc,
            position=0,
            leave=True,
            disable=None if bar else True,  # None: shown on a terminal only
            bar_format="{desc} {n_fmt}/{total_fmt} stages |{bar}| {elapsed} elapsed{postfix}",
            dynamic_ncols=True,
        )

    def start(self, name: str) -> None:
        """Show ``name`` as the stage in progress."""
        log.debug("[%d/%d] %s", self.done + 1, self.total, name)
        self.bar.set_description_str(f"{self.desc}: {name}", refresh=True)

    def finish(self, name: str, seconds: float, reused: str | None = None) -> None:
        """``name`` is done: ``reused`` names what was reused, else it ran for ``seconds``."""
        self.done += 1
        if reused is not None:
            log.info("[%d/%d] %s: reusing %s", self.done, self.total, name, reused)
        else:
            log.info("[%d/%d] %s: ran in %.1f s", self.done, self.total, name, seconds)
            self.trained, self.trained_seconds = self.trained + 1, self.trained_seconds + seconds
        left = self.total - self.done
        if self.trained and left:
            self.bar.set_postfix_str(
                f"about {_minutes(self.trained_seconds / self.trained * left)} left", refresh=False
            )
        else:
            self.bar.set_postfix_str("", refresh=False)
        self.bar.update(1)
        self.bar.refresh()  # stages are rare: always draw the new count

    def close(self) -> None:
        self.bar.set_description_str(self.desc, refresh=False)
        self.bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
