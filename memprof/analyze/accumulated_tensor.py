"""accumulated_tensor: a holder whose tensor count, bytes or autograd history grows at every
diagnosed boundary (:data:`CONSECUTIVE` times in a row), keeping what it held three boundaries ago.

What it keeps must survive the boundaries: a graph that still holds a node an earlier census saw
(the census stamps the roots it meets), or the same storages. A list that a backward consumes and
the code clears at each iteration holds new tensors at every boundary, however its length varies:
it is no accumulation. A ``deque(maxlen=...)`` of detached tensors can't grow past its bound. A
holder whose history is another growing holder's (``mean = total / count``) is left to that one.

Detached tensors that pile up are a warning in training where they hold :data:`HELD_SHARE` of the
iteration's peak, else a tip.

Known limitations: only holders the census reaches (from the main thread's user frames, within
its budget) are followed, and a holder is followed by (file, function, path).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from memprof.analyze.base import BaseDetector
from memprof.analyze.fixes import accumulation_fix, keep_detached_fix, on_gpu
from memprof.analyze.source import Want, locate
from memprof.model import Finding, FindingKind, Severity
from memprof.model.run import ForwardRecord, IterationRecord, VarObservation
from memprof.units import fmt_bytes

CONSECUTIVE = 3  # increases in a row that make an accumulation
KEPT = 16  # observations kept per variable
HELD_SHARE = 0.05  # detached tensors held: a warning from this share of the iteration's peak


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


def survived(window: list[VarObservation], since: int) -> bool:
    """Whether the holder still keeps what it kept at the window's first boundary (step ``since``):
    a node of its graph stamped then or earlier, or one of the same storages."""
    last = window[-1]
    oldest = getattr(last, "oldest", None)
    if last.graph.graphs > 0 and hasattr(last, "oldest"):
        return oldest is not None and oldest <= since
    return bool(last.storage_keys & window[0].storage_keys) or not hasattr(last, "oldest")


class AccumulatedTensorDetector(BaseDetector):
    kind = FindingKind.ACCUMULATED_TENSOR

    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str], _Series] = defaultdict(_Series)

    def on_iteration(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> list[Finding]:
        made: list[tuple[Finding, VarObservation, bool]] = []
        for obs in it.variables:
            s = self.series[obs.key]
            s.obs.append(obs)
            s.steps.append(it.index)
            if len(s.obs) > KEPT:
                del s.obs[:-KEPT], s.steps[:-KEPT]
            hit = self._check(s, it)
            if hit is not None:
                made.append((hit[0], obs, hit[1]))
        growing_history = {obs.path for _, obs, history in made if history}
        return [f for f, obs, history in made
                if not (history and set(getattr(obs, "inner", ())) & growing_history)]

    def _check(self, s: _Series, it: IterationRecord) -> tuple[Finding, bool] | None:
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
        if not (history or count or grows_bytes) or not survived(window, s.steps[-n]):
            return None
        if getattr(last, "bounded", False) and last.graph.graphs == 0:
            return None  # a deque(maxlen=...) of detached tensors: flat once full
        per_step = max(0, (last.bytes + last.graph.saved_bytes - window[0].bytes - window[0].graph.saved_bytes) // steps)
        name = last.path
        accumulates = history and not count  # the same tensors, each with a longer history
        if accumulates:
            where = locate(last, Want.of(last, "history"))
            nodes = (last.graph.nodes - window[0].graph.nodes) // steps
            into = " in its items" if last.is_container else ""
            message = (
                f"{name} accumulates the autograd history of every step{into} "
                f"(+{nodes} graph nodes per step, kept alive until {name} is dropped)"
            )
            advice = accumulation_fix(where, bool(getattr(last, "scalar", True)))
            severity = Severity.WARNING
        elif last.graph.graphs > 0:
            where = locate(last, Want.of(last, "count" if count else "bytes"))
            message = (
                f"{name} keeps a tensor with its autograd graph every step "
                f"(+{fmt_bytes(per_step)} per step, {last.tensors} tensors held)"
            )
            advice = keep_detached_fix(where, on_gpu=on_gpu(it))
            severity = Severity.WARNING
        else:
            where = locate(last, Want.of(last, "count" if count else "bytes"))
            share = last.bytes / max(it.peak_bytes, 1)
            message = (
                f"{name} grows every step (+{fmt_bytes(per_step)} per step, {last.tensors} tensors held, "
                f"{fmt_bytes(last.bytes)} in all)"
            )
            # On a CPU run, moving it "to the CPU" changes nothing: only bounding or dropping helps.
            offload = "keep it on the CPU (`.cpu()`) or as the numbers you need" if on_gpu(it) else "keep only the numbers you need"
            advice = f"bound {name} (`collections.deque(maxlen=...)`), drop what was used, or {offload}"
            severity = Severity.WARNING if it.phase == "train" and share >= HELD_SHARE else Severity.INFO
        return Finding(
            kind=self.kind, severity=severity, message=message, advice=advice,
            file=where.file, line=where.line, variable=name, bytes=per_step, step=it.index,
            extra={"tensors": last.tensors, "graph_nodes": last.graph.nodes, "held_bytes": last.bytes},
        ), accumulates
