"""accumulated_tensor: a variable whose tensor count, bytes or autograd history grows at every
diagnosed boundary (:data:`CONSECUTIVE` times in a row).

Known limitations: only variables the census sees (the main thread's user frames and the user
objects they hold) are followed, and a variable is followed by (file, function, name).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from memprof.analyze.base import BaseDetector
from memprof.analyze.source import variable_line
from memprof.model import Finding, FindingKind, Severity
from memprof.model.run import ForwardRecord, IterationRecord, VarObservation
from memprof.units import fmt_bytes

CONSECUTIVE = 3  # increases in a row that make an accumulation
KEPT = 16  # observations kept per variable


@dataclass
class _Series:
    obs: list[VarObservation] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)


def increasing(values: list[int], n: int = CONSECUTIVE) -> bool:
    """Whether the last ``n`` values each rose above the one before."""
    if len(values) < n + 1:
        return False
    tail = values[-(n + 1):]
    return all(b > a for a, b in zip(tail, tail[1:], strict=False))


class AccumulatedTensorDetector(BaseDetector):
    kind = FindingKind.ACCUMULATED_TENSOR

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str], _Series] = defaultdict(_Series)

    def on_iteration(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> list[Finding]:
        out = []
        for obs in it.variables:
            s = self.series[obs.key]
            s.obs.append(obs)
            s.steps.append(it.index)
            if len(s.obs) > KEPT:
                del s.obs[:-KEPT], s.steps[:-KEPT]
            f = self._check(s, it.index)
            if f is not None:
                out.append(f)
        return out

    def _check(self, s: _Series, step: int) -> Finding | None:
        obs = s.obs
        last = obs[-1]
        n = CONSECUTIVE + 1
        if len(obs) < n:
            return None
        window = obs[-n:]
        steps = max(1, s.steps[-1] - s.steps[-n])
        history = increasing([o.graph.nodes for o in window])
        count = last.is_container and increasing([o.tensors for o in window])
        grows_bytes = increasing([o.bytes for o in window])
        if not (history or count or grows_bytes):
            return None
        per_step = max(0, (last.bytes + last.graph.saved_bytes - window[0].bytes - window[0].graph.saved_bytes) // steps)
        name = last.path
        if history and not last.is_container:
            nodes = (last.graph.nodes - window[0].graph.nodes) // steps
            message = (
                f"{name} accumulates the autograd history of every step "
                f"(+{nodes} graph nodes per step, kept alive until {name} is dropped)"
            )
            advice = f"accumulate a number, not the graph: `{name} += loss.item()` (or `loss.detach()`)"
            severity = Severity.WARNING
        elif last.graph.graphs > 0:
            message = (
                f"{name} keeps a tensor with its autograd graph every step "
                f"(+{fmt_bytes(per_step)} per step, {last.tensors} tensors held)"
            )
            advice = (
                f"store `t.detach()` (or `t.detach().cpu()`, or a reduced metric) in {name}, "
                "not the graph-carrying tensor"
            )
            severity = Severity.WARNING
        else:
            message = f"{name} grows every step (+{fmt_bytes(per_step)} per step, {last.tensors} tensors held)"
            advice = f"if the run is long, keep {name} on the CPU (`.cpu()`) or reduce it to the numbers you need"
            severity = Severity.INFO
        file, line = variable_line(last)
        return Finding(
            kind=self.kind, severity=severity, message=message, advice=advice,
            file=file, line=line, variable=name, bytes=per_step, step=step,
            extra={"tensors": last.tensors, "graph_nodes": last.graph.nodes, "held_bytes": last.bytes},
        )
