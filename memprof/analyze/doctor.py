"""The doctor: runs the registry's detectors as the run goes, so findings are known (and
published) early, and merges what they find."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

from memprof.analyze.base import Detector, LiveRef, RunEnd
from memprof.analyze.registry import DETECTORS
from memprof.model import Finding, Status
from memprof.model.run import ForwardRecord, IterationRecord, RunData


class Doctor:
    """One instance per run: each detector keeps its state from event to event.

    A finding seen again (same kind, file and line) is merged into the first one: it keeps its
    first step, and takes the latest figures when they are larger or more severe.
    """

    def __init__(self, detectors: Sequence[Detector] | None = None) -> None:
        self.detectors: list[Detector] = list(detectors) if detectors is not None else [d() for d in DETECTORS]
        self.findings: list[Finding] = []
        self._index: dict[tuple[str, str | None, int | None], Finding] = {}
        # Set by the session: the tracker's live storages, for the line of a memory growth.
        self.tracker_refs: Callable[[], Sequence[LiveRef]] | None = None

    def _add(self, findings: list[Finding]) -> None:
        for f in findings:
            if f.file is not None and not f.file.startswith("<"):  # "<ipython-input-3-...>" is no path
                f.file = os.path.abspath(f.file)
            key = (f.kind.value, f.file, f.line)
            old = self._index.get(key)
            if old is None:
                self._index[key] = f
                self.findings.append(f)
            else:  # the same problem seen again: keep the first step, and the latest figures
                graver = f.severity.rank < old.severity.rank
                if f.bytes >= old.bytes or graver:  # the figures, message and variable of one finding
                    old.bytes, old.message, old.advice, old.extra = f.bytes, f.message, f.advice, f.extra
                    old.variable = f.variable
                if graver:
                    old.severity = f.severity

    def observe(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> None:
        """A diagnosed iteration boundary."""
        for d in self.detectors:
            self._add(d.on_iteration(it, forwards))

    def forward_dropped(self, rec: ForwardRecord, step: int) -> None:
        for d in self.detectors:
            self._add(d.on_forward_dropped(rec, step))

    def finish_forwards(self, pending: Sequence[ForwardRecord], step: int) -> None:
        for d in self.detectors:
            self._add(d.on_forwards_pending(pending, step))

    def finish(self, data: RunData, status: Status = Status.OK, exc: BaseException | None = None) -> list[Finding]:
        """The end of the run: the findings, the most severe first, then by step."""
        end = RunEnd(data=data, status=status, exc=exc, findings=self.findings, refs=self.tracker_refs)
        for d in self.detectors:
            self._add(d.on_finish(end))
        return sorted(self.findings, key=lambda f: (f.severity.rank, f.step or 0))
