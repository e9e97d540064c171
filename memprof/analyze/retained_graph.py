"""retained_graph: a holder of a graph whose saved tensors survive its backward (a backward went
through it with ``retain_graph=True`` and it is still referenced, seen at two boundaries), or that
no backward freed across :data:`SURVIVED` iteration boundaries.

A graph that a later backward consumes (an episode's log-probabilities, the chunks of one step) is
no retained graph: its saved tensors are freed by that backward, before they outlive three
boundaries. Worth a warning only from :data:`RETAINED_MIN_BYTES` and :data:`RETAINED_MIN_SHARE`
of the iteration's peak.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from memprof.analyze.base import BaseDetector
from memprof.analyze.fixes import keep_detached_fix
from memprof.analyze.source import Want, locate, statement_start
from memprof.model import Finding, FindingKind, Severity
from memprof.model.run import ForwardRecord, IterationRecord
from memprof.units import fmt_bytes

RETAINED_MIN_BYTES = 4096  # saved tensors below this are not worth a warning...
RETAINED_MIN_SHARE = 0.005  # ...nor below this share of the iteration's peak
SURVIVED = 3  # boundaries a graph no backward went through must outlive


class RetainedGraphDetector(BaseDetector):
    kind = FindingKind.RETAINED_GRAPH

    def __init__(self) -> None:
        self.hits: dict[tuple[str, str, str], int] = defaultdict(int)

    def on_iteration(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> list[Finding]:
        out = []
        for obs in it.variables:
            g = obs.graph
            if not g.saved_root_keys or g.saved_bytes < max(RETAINED_MIN_BYTES, RETAINED_MIN_SHARE * it.peak_bytes):
                continue
            old = g.first_seen is not None and g.first_seen <= it.index - SURVIVED
            backward_done = [forwards[k] for k in g.forward_keys if k in forwards and forwards[k].backpropagated]
            if backward_done:
                self.hits[obs.key] += 1
                if self.hits[obs.key] < 2:
                    continue
            elif not old:
                continue
            name = obs.path
            where = locate(obs, Want.of(obs, "count" if obs.is_container else "rebind"), rebinding=not obs.is_container)
            keep = keep_detached_fix(where)
            site = backward_done[0].backward_site if backward_done else None
            if site is not None:
                file, line = site[0], statement_start(*site)
                message = (
                    f"{name} holds an autograd graph whose saved tensors ({fmt_bytes(g.saved_bytes)}) outlive its "
                    "backward: backward ran with retain_graph=True and the graph is still referenced"
                )
                advice = f"drop retain_graph=True unless you backpropagate through this graph again; {keep}"
            else:
                file, line = where.file, where.line
                message = (
                    f"{name} keeps {g.graphs_with_saved} autograd graph(s) alive with "
                    f"{fmt_bytes(g.saved_bytes)} of saved tensors that no backward freed in {SURVIVED} iterations"
                )
                advice = f"{keep}; or compute them under `torch.no_grad()` if they need no gradient"
            out.append(Finding(
                kind=self.kind, severity=Severity.WARNING, message=message, advice=advice,
                file=file, line=line, variable=name, bytes=g.saved_bytes, step=it.index,
                extra={"graphs": g.graphs_with_saved},
            ))
        return out
