"""memory_growth: memory at training step boundaries that rises from each boundary to the next
over the last :data:`MIN_STEPS` boundaries or more, by at least 1 MiB and 2% of the peak in all.

It is the fallback diagnosis: made only when no more specific finding (an accumulated tensor, a
retained graph, a missing ``no_grad``) explains the growth. Its line is the user line that made
the most transient bytes still alive from the growth's first step on.

Known limitations: on CPU only detailed steps count (watched ones read the C heap, not tensors);
the first two training steps are skipped (optimizer state appears there). In a long run it sees
the steps kept (:mod:`memprof.model.history`): each bucket's lowest and highest end keep a rise's
shape, so a steady rise still reads as one; its rate is per step of the run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from memprof.analyze.base import BaseDetector, RunEnd
from memprof.model import Finding, FindingKind, Severity
from memprof.model.categories import TRANSIENT_FROM
from memprof.model.run import ForwardRecord, IterationRecord
from memprof.units import fmt_bytes

MIN_STEPS = 6  # boundaries in the increasing run at the end
EXPLAINED_BY = frozenset({FindingKind.ACCUMULATED_TENSOR, FindingKind.RETAINED_GRAPH, FindingKind.MISSING_NO_GRAD})


class MemoryGrowthDetector(BaseDetector):
    kind = FindingKind.MEMORY_GROWTH

    def __init__(self) -> None:
        # The bytes held by bounded containers (``deque(maxlen=...)``, a dict of them) at each
        # census: they fill up to their bound, which is no growth to drop.
        self.bounded: dict[int, int] = {}

    def on_iteration(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> list[Finding]:
        if it.variables:
            self.bounded[it.index] = sum(v.bytes for v in it.variables if getattr(v, "bounded", False))
        return []

    def _bounded_growth(self, first: int, last: int) -> int:
        """What bounded containers gained between the censuses nearest steps ``first`` and ``last``."""
        before = [i for i in self.bounded if i <= first] or [i for i in self.bounded if i <= last]
        after = [i for i in self.bounded if i <= last]
        if not before or not after:
            return 0
        return max(0, self.bounded[max(after)] - self.bounded[min(before, key=lambda i: abs(i - first))])

    def on_finish(self, end: RunEnd) -> list[Finding]:
        if any(f.kind in EXPLAINED_BY for f in end.findings):
            return []
        f = self._growth(end)
        return [f] if f is not None else []

    def _growth(self, end: RunEnd) -> Finding | None:
        data = end.data
        its = [it for it in data.iterations if it.phase == "train" and (it.detailed or data.device_type == "cuda")]
        its = its[2:]  # optimizer state appears in the first steps
        if len(its) < MIN_STEPS:
            return None
        ends = [it.end_bytes for it in its]
        # The longest increasing run at the end.
        start = len(ends) - 1
        while start > 0 and ends[start] > ends[start - 1]:
            start -= 1
        run = ends[start:]
        if len(run) < MIN_STEPS:
            return None
        growth = run[-1] - run[0] - self._bounded_growth(its[start].index, its[-1].index)
        if growth < max(1 << 20, 0.02 * max(data.peak_bytes, 1)):
            return None
        # A long run's steps are downsampled (each bucket keeps its lowest and highest): the
        # rise is per step of the run, over the steps between the first and the last kept.
        first_step = its[start].index
        span = max(its[-1].index - first_step, len(run) - 1)
        per_step = growth // span
        file = line = None
        by_site: dict[tuple[str, int], int] = defaultdict(int)
        for r in end.live_refs:  # asked for only now: a long list
            if r.step >= first_step and r.category >= TRANSIENT_FROM and r.site is not None:
                by_site[r.site] += r.nbytes
        if by_site:
            (file, line), _ = max(by_site.items(), key=lambda kv: kv[1])
        return Finding(
            kind=self.kind, severity=Severity.WARNING,
            message=f"memory at step boundaries grows by {fmt_bytes(per_step)} per step over {span + 1} steps",
            advice="find what keeps a reference to each step's tensors (lists, dicts, attributes) and drop it",
            file=file, line=line, bytes=per_step, step=its[-1].index,
        )
