"""missing_no_grad: model calls recorded with autograd whose graph was dropped, or kept to the
end of the run, without any backward reaching it; reported from the second such call of a line.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from memprof.analyze.base import BaseDetector
from memprof.analyze.source import statement_start
from memprof.model import Finding, FindingKind, Severity
from memprof.model.run import ForwardRecord, IterationRecord
from memprof.units import fmt_bytes


class MissingNoGradDetector(BaseDetector):
    kind = FindingKind.MISSING_NO_GRAD

    def __init__(self) -> None:
        self.dropped: dict[tuple[str, int], list[ForwardRecord]] = defaultdict(list)
        # The most a module's forward saved: a dropped call may have been recorded between sampled
        # steps, where its own figure is the last sampled one's.
        self.max_saved: dict[str, int] = defaultdict(int)
        self.findings: dict[tuple[str, int], Finding] = {}

    def _note_saved(self, rec: ForwardRecord) -> None:
        self.max_saved[rec.module] = max(self.max_saved[rec.module], rec.saved_bytes)

    def on_iteration(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> list[Finding]:
        for rec in forwards.values():
            if rec.saved_bytes:
                self._note_saved(rec)
        return []

    def on_forward_dropped(self, rec: ForwardRecord, step: int) -> list[Finding]:
        return self._dropped(rec, step, at_end=False)

    def on_forwards_pending(self, pending: Sequence[ForwardRecord], step: int) -> list[Finding]:
        return [f for rec in pending for f in self._dropped(rec, step, at_end=True)]

    def _dropped(self, rec: ForwardRecord, step: int, at_end: bool) -> list[Finding]:
        if rec.site is None:
            return []
        self._note_saved(rec)
        recs = self.dropped[rec.site]
        recs.append(rec)
        if len(recs) < 2:
            return []
        file, line = rec.site
        kept = " (kept alive until the end of the run)" if at_end else ""
        measured = [r for r in recs if r.no_grad_saving is not None]
        if measured:
            # The peak with autograd on minus the peak with it off, for one call (with the graphs of
            # this line that were alive at once), never a sum over the run.
            best = max(measured, key=lambda r: (r.no_grad_saving or 0, r.alive))
            saved = best.no_grad_saving or 0
            at_once = f" ({best.alive} of its graphs alive at once)" if best.alive > 1 else ""
            figure = f"`torch.no_grad()` would lower the peak of these calls by {fmt_bytes(saved)}{at_once}"
        else:  # not measured (the replay failed): what the forward saved, parameters and inputs included
            saved = max(self.max_saved[rec.module], max(r.saved_bytes for r in recs))
            figure = f"up to {fmt_bytes(saved)} of tensors saved per call for nothing"
        finding = self.findings.get(rec.site)
        if finding is None:
            finding = self.findings[rec.site] = Finding(
                kind=self.kind, severity=Severity.WARNING, message="",
                advice="wrap this evaluation/inference in `with torch.no_grad():` (or `torch.inference_mode()`)",
                file=file, line=statement_start(file, line), variable=rec.module, step=step,
            )
        # One finding per line, updated in place: a measured figure replaces a larger estimate.
        finding.message = f"{len(recs)} calls of {rec.module} recorded autograd history that no backward used{kept}: {figure}"
        finding.bytes = saved
        finding.extra = {"module": rec.module, "calls": len(recs), "measured": bool(measured)}
        return [finding]
