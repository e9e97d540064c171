"""How a run stands while it runs, for the integrations that report as they go (a Ray Tune trial's
results, a Lightning epoch's line): what :meth:`memprof.session.Session.progress` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from memprof.model.findings import Finding


@dataclass(frozen=True)
class Progress:
    steps: int  # iterations recorded so far
    peak_bytes: int  # the run's peak so far (the CUDA allocator's where it is higher)
    budget_bytes: int | None = None
    findings: list[Finding] = field(default_factory=list)  # found so far (more come at the run's end)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity.is_diagnosis)

    @property
    def fits(self) -> bool | None:
        """Whether the peak so far is within the budget (None: no budget)."""
        return None if self.budget_bytes is None else self.peak_bytes <= self.budget_bytes
