"""lingering_tensor: storages from an earlier iteration, alive at this iteration's peak and
dropped later in it, that one variable refers to, worth :data:`LINGER_SHARE` of the peak;
reported from the second iteration where that variable lingers so.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from memprof.analyze.base import BaseDetector
from memprof.analyze.fixes import on_gpu
from memprof.analyze.source import find_statement
from memprof.model import Finding, FindingKind, Severity
from memprof.model.run import ForwardRecord, IterationRecord, LingeringCandidate
from memprof.units import fmt_bytes

LINGER_SHARE = 0.05  # the spec: dropping it must lower the peak by at least 5%


class LingeringTensorDetector(BaseDetector):
    kind = FindingKind.LINGERING_TENSOR

    def __init__(self) -> None:
        self.hits: dict[tuple[str, str], int] = defaultdict(int)

    def on_iteration(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> list[Finding]:
        out: list[Finding] = []
        by_var: dict[tuple[str, str], list[LingeringCandidate]] = defaultdict(list)
        for c in it.lingering:
            if c.file is not None and c.path is not None and c.freed_before_end:
                by_var[(c.file, c.path)].append(c)
        for key, cands in by_var.items():
            total = sum(c.saving for c in cands)
            peak = max(c.peak for c in cands)
            if total < LINGER_SHARE * peak:
                continue
            self.hits[key] += 1
            if self.hits[key] < 2:
                continue
            file, path = key
            c = cands[0]
            expr = path.split(" (in ", 1)[0]  # "last (in closure log)": written "last" in the closure
            line = find_statement(file, c.function or "", c.first_line or 0, c.line, expr, rebinding=True,
                                  owner_file=file if "." in expr else None)
            share = total / max(peak, 1)
            keep = "a slice, `.cpu()`, a number" if on_gpu(it) else "a slice, a number"  # .cpu() on a CPU run: no saving
            out.append(Finding(
                kind=self.kind,
                severity=Severity.WARNING if it.phase == "train" else Severity.INFO,
                message=(
                    f"{path} still holds {fmt_bytes(sum(c.nbytes for c in cands))} from the previous iteration "
                    f"at this iteration's peak; dropping it earlier lowers the peak by {fmt_bytes(total)} ({share:.0%})"
                ),
                advice=(
                    f"`del {expr}` once it is used, or keep only what you need of it "
                    f"({keep}) so the peak drops by about {fmt_bytes(total)}"
                ),
                file=file, line=line if line is not None else c.line, variable=path, bytes=total, step=it.index,
                extra={"share_of_peak": round(share, 4)},
            ))
        return out
