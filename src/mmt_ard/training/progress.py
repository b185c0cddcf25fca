"""Log lines and progress bars on one terminal: a log line never lands in the middle of a bar.

A console log handler writes straight to the stream, after whatever a bar drew on the current line.
:func:`log_lines_above_bars` swaps every console handler of the root logger for one that writes
through ``tqdm.write``, which clears the bars, prints the line and draws the bars again below it.
Unlike ``tqdm.contrib.logging.logging_redirect_tqdm`` it keeps each handler's level and name (so a
console that shows INFO does not start showing DEBUG), and it nests.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

__all__ = ["log_lines_above_bars"]


class _AboveBars(logging.StreamHandler):  # type: ignore[type-arg]
    """A console handler that writes each record with ``tqdm.write``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:  # noqa: BLE001  (a handler never raises: logging reports it and goes on)
            self.handleError(record)


def _console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (sys.stdout, sys.stderr)


def _above_bars(handler: logging.StreamHandler) -> _AboveBars:  # type: ignore[type-arg]
    out = _AboveBars(handler.stream)
    out.setFormatter(handler.formatter)
    out.setLevel(handler.level)
    out.set_name(handler.get_name())  # type: ignore[arg-type]
    for f in handler.filters:
        out.addFilter(f)
    return out


@contextmanager
def log_lines_above_bars() -> Iterator[None]:
    """While inside, the root logger's console handlers write above the open progress bars."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [_above_bars(h) if _console(h) else h for h in saved]  # type: ignore[arg-type]
    try:
        yield
    finally:
        root.handlers = saved
