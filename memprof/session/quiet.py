"""memprof's own work (the advisor's replay on fake tensors, the doctor, the advisor) speaks to the
report, never to the user's stderr: what torch (or memprof) logs through :mod:`logging`, and the
Python warnings raised meanwhile, are kept by :func:`kept_quiet` for the report's warnings.

Known limitation: :func:`warnings.catch_warnings` is process-wide, so a warning another thread of
the script raises during the block is kept too (the blocks are short, and run on the script's own
thread at a step boundary or at the end).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

OURS = ("torch", "memprof")  # the loggers memprof's work may make talk, and their children


class _Keep(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not format
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            text = f"{text}: {type(e).__name__}: {e}"
        _add(self.lines, f"{record.name} logged {text}")


def _add(lines: list[str], text: str) -> None:
    first = (text.strip().splitlines() or [""])[0][:300]
    if first not in lines:
        lines.append(first)


def _loggers() -> list[logging.Logger]:
    names = [n for n in logging.root.manager.loggerDict if n in OURS or n.startswith(tuple(f"{o}." for o in OURS))]
    found = [logging.getLogger(n) for n in sorted(set(names) | set(OURS))]
    return [lg for lg in found if lg.handlers or lg.name in OURS]


@contextmanager
def kept_quiet() -> Iterator[list[str]]:
    """Inside the block, torch's and memprof's log records (those their levels let through) and the
    Python warnings go, one line each (first line, deduplicated), into the yielded list instead of
    to their handlers; afterwards every logger is as it was."""
    lines: list[str] = []
    keep = _Keep(lines)
    saved = [(lg, lg.handlers[:], lg.propagate) for lg in _loggers()]
    for lg, _, _ in saved:
        lg.handlers = [keep]
        lg.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield lines
            finally:
                for w in caught:
                    _add(lines, f"{w.category.__name__}: {w.message}")
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers = handlers
            lg.propagate = propagate


__all__ = ["kept_quiet"]
