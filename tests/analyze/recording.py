"""Run data recorded in-process, as a run records it, for the detectors' unit tests.

:class:`Recorder` uses the collectors the session uses at a detailed step: the census of the
caller's frame at each boundary (``collect.census``), and ``collect.graphs.ForwardTracker`` on each
model call (which notes a backward's user line, and a graph dropped without backward). What the
tracker measures (peaks, lingering storages, live refs) is given by the tests instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from memprof.analyze.base import Detector
from memprof.collect.census import GraphWalker, census
from memprof.collect.graphs import ForwardTracker
from memprof.model import Finding
from memprof.model.run import ForwardRecord, GraphStats, IterationRecord, RunData

MiB = 1 << 20
BASE = 100 * MiB
GROWING = [BASE] * 2 + [BASE + i * 2 * MiB for i in range(8)]  # end bytes: 2 MiB more at each boundary


@dataclass
class Ref:
    """A live storage as either tracker records it (``live_refs()``)."""

    nbytes: int
    category: int
    step: int
    site: tuple[str, int] | None


def line_of(text: str, fn: Callable[..., Any] | None = None) -> int:
    """The line of the caller's file (or of ``fn``'s) holding ``text``, which must appear once
    (lines that look it up don't count)."""
    filename = fn.__code__.co_filename if fn is not None else sys._getframe(1).f_code.co_filename
    with open(filename, encoding="utf-8") as fh:
        hits = [i for i, line in enumerate(fh, 1) if text in line and "line_of(" not in line]
    assert len(hits) == 1, (text, hits)
    return hits[0]


class Recorder:
    """Feeds one detector what the session would, while a loop in the caller runs."""

    def __init__(self, detector: Detector, peak_bytes: int = 1 << 20,
                 site_of: Callable[[torch.Tensor], tuple[str, int] | None] | None = None) -> None:
        self.detector = detector
        self.site_of = site_of  # the storage tracker's line of a tensor's storage, as the session gives it
        self.peak_bytes = peak_bytes
        self.step = 0
        self.findings: list[Finding] = []
        self.iterations: list[IterationRecord] = []
        self.forwards = ForwardTracker(self._dead, lambda rec: None)

    def _dead(self, rec: ForwardRecord) -> None:
        if not rec.backpropagated:
            self.findings += self.detector.on_forward_dropped(rec, self.step)

    def call(self, model: torch.nn.Module, *args: Any) -> Any:
        """``model(*args)``, watched as the session watches a root module's call from the caller's line."""
        caller = sys._getframe(1)
        out = model(*args)
        rec = ForwardRecord(
            module=type(model).__name__, site=(caller.f_code.co_filename, caller.f_lineno),
            step=self.step, phase="train" if torch.is_grad_enabled() and model.training else "eval",
        )
        if isinstance(out, torch.Tensor) and out.grad_fn is not None:
            rec.saved_bytes = GraphWalker().walk(out.grad_fn, GraphStats())
        self.forwards.watch(out, rec)
        return out

    def boundary(self, phase: str = "train") -> IterationRecord:
        """The end of an iteration in the caller's loop: its census, then the detector."""
        it = IterationRecord(
            index=self.step, phase=phase, detailed=True, peak_bytes=self.peak_bytes, end_bytes=0,
            batch_size=None, seconds=0.0,
            variables=census(sys._getframe(1), forward_keys=set(self.forwards.by_node), step=self.step,
                             site_of=self.site_of),
        )
        self.iterations.append(it)
        self.findings += self.detector.on_iteration(it, self.forwards.by_node)
        self.step += 1
        self.forwards.step = self.step
        return it

    def finish(self) -> list[Finding]:
        """The end of the loop: forward passes still pending without backward."""
        pending = [r for r in self.forwards.pending() if not r.backpropagated]
        self.findings += self.detector.on_forwards_pending(pending, self.step)
        return self.findings


def iteration(index: int, phase: str = "train", end_bytes: int = 0, peak_bytes: int = 0, **fields: Any) -> IterationRecord:
    """An iteration's record, as a run records it at a boundary."""
    return IterationRecord(index=index, phase=phase, detailed=fields.pop("detailed", True), peak_bytes=peak_bytes,
                           end_bytes=end_bytes, batch_size=fields.pop("batch_size", None), seconds=0.01, **fields)


def run_data(iterations: list[IterationRecord] | None = None, **fields: Any) -> RunData:
    """A finished run's data, empty but for what the test gives."""
    values: dict[str, Any] = dict(
        iterations=iterations or [], peak_bytes=0, breakdown_at_peak={}, device_type="cpu", device_total_bytes=None,
        budget_bytes=None, memory_limit_bytes=None, optimizers=[], modules=[], cuda=None, oom=None,
    )
    values.update(fields)
    return RunData(**values)
