"""The doctor: findings from the timeline. See :mod:`memprof.analyze.detectors`."""

from __future__ import annotations

import os
from typing import Any

from memprof.analyze.detectors import (
    AccumulationDetector,
    LingeringDetector,
    MissingNoGradDetector,
    RetainedGraphDetector,
    fragmentation_finding,
    growth_finding,
    oom_finding,
)
from memprof.collect.graphs import ForwardRecord
from memprof.collect.timeline import IterationRecord, RunData
from memprof.report.model import Finding, FindingKind, Severity, Status

_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


class Doctor:
    """Runs the detectors as the run goes, so findings are known (and published) early."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self._index: dict[tuple[str, str | None, int | None], Finding] = {}
        self.accumulation = AccumulationDetector()
        self.retained = RetainedGraphDetector()
        self.no_grad = MissingNoGradDetector()
        self.lingering = LingeringDetector()
        self.tracker_refs: Any = None  # set by the session: live storages, for growth sites

    def _add(self, findings: list[Finding]) -> None:
        for f in findings:
            if f.file is not None:
                f.file = os.path.abspath(f.file)
            key = (f.kind.value, f.file, f.line)
            old = self._index.get(key)
            if old is None:
                self._index[key] = f
                self.findings.append(f)
            else:  # the same problem seen again: keep the first step, and the latest figures
                if f.bytes >= old.bytes or _SEVERITY_ORDER[f.severity] < _SEVERITY_ORDER[old.severity]:
                    old.bytes, old.message, old.advice, old.extra = f.bytes, f.message, f.advice, f.extra
                if _SEVERITY_ORDER[f.severity] < _SEVERITY_ORDER[old.severity]:
                    old.severity = f.severity

    def observe(self, it: IterationRecord, forwards: dict[int, ForwardRecord]) -> None:
        for rec in forwards.values():
            if rec.saved_bytes:
                self.no_grad.note_saved(rec)
        self._add(self.accumulation.observe(it))
        self._add(self.retained.observe(it, forwards))
        self._add(self.lingering.observe(it))

    def forward_dropped(self, rec: ForwardRecord, step: int) -> None:
        self._add(self.no_grad.dropped_forward(rec, step))

    def finish_forwards(self, pending: list[ForwardRecord], step: int) -> None:
        for rec in pending:
            self._add(self.no_grad.dropped_forward(rec, step, at_end=True))

    def finish(self, data: RunData, status: Status = Status.OK, exc: BaseException | None = None) -> list[Finding]:
        specific = {FindingKind.ACCUMULATED_TENSOR, FindingKind.RETAINED_GRAPH, FindingKind.MISSING_NO_GRAD}
        if not any(f.kind in specific for f in self.findings):
            g = growth_finding(data, self.tracker_refs() if callable(self.tracker_refs) else None)
            if g is not None:
                self._add([g])
        frag = fragmentation_finding(data)
        if frag is not None:
            self._add([frag])
        if status == Status.OOM:
            self._add([oom_finding(data, exc)])
        return sorted(self.findings, key=lambda f: (_SEVERITY_ORDER[f.severity], f.step or 0))


__all__ = ["Doctor"]
