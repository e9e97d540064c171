"""fragmentation: the CUDA caching allocator reserved far more than tensors ever used at once
(at least 512 MiB and 30% of what it reserved, at the peaks).

Known limitations: CUDA only (``RunData.cuda`` is None elsewhere); it compares peaks, which may
come from different moments of the run.
"""

from __future__ import annotations

from memprof.analyze.base import BaseDetector, RunEnd
from memprof.model import CudaStats, Finding, FindingKind, Severity
from memprof.units import fmt_bytes

MIN_WASTE_BYTES = 512 << 20
MIN_WASTE_SHARE = 0.3  # of the reserved peak


class FragmentationDetector(BaseDetector):
    kind = FindingKind.FRAGMENTATION

    def on_finish(self, end: RunEnd) -> list[Finding]:
        c = end.data.cuda
        f = self._fragmentation(c) if c is not None else None
        return [f] if f is not None else []

    def _fragmentation(self, c: CudaStats) -> Finding | None:
        reserved, allocated = c.reserved_bytes or 0, c.allocated_bytes or 0
        peak_reserved = c.reserved_peak_bytes if c.reserved_peak_bytes is not None else reserved
        peak_alloc = c.allocated_peak_bytes if c.allocated_peak_bytes is not None else allocated
        waste = peak_reserved - peak_alloc
        if waste < max(MIN_WASTE_BYTES, MIN_WASTE_SHARE * max(peak_reserved, 1)):
            return None
        retries = c.num_alloc_retries or 0
        return Finding(
            kind=self.kind, severity=Severity.WARNING if retries else Severity.INFO,
            message=(
                f"the allocator reserved {fmt_bytes(peak_reserved)} at most while tensors used {fmt_bytes(peak_alloc)} "
                f"at most: {fmt_bytes(waste)} cached but not usable for the requests made"
                + (f"; {retries} allocation(s) had to free the cache and retry" if retries else "")
            ),
            advice="set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True so segments can grow instead of splitting",
            bytes=waste,
        )
