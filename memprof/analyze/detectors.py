"""One detector per finding kind. Each reads the timeline (and nothing of torch's live state)
and returns findings; the :class:`~memprof.analyze.Doctor` runs them and removes duplicates.

What each looks at:
- accumulated_tensor: a variable whose tensor count, bytes or autograd history grows at every
  boundary (three times in a row).
- retained_graph: a graph that still holds saved tensors one boundary later; or one that a
  backward already went through (so ``retain_graph=True``) and that is still held.
- missing_no_grad: model calls recorded with autograd whose graph was dropped, or kept to the
  end, without any backward reaching it.
- lingering_tensor: a storage from an earlier iteration alive at this iteration's peak and
  dropped during the next one, worth at least 5% of the peak.
- memory_growth: memory at boundaries that rises steadily with no more specific finding.
- fragmentation: CUDA reserved memory far above what is allocated.
- oom: the run ran out of memory.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from memprof.analyze.source import find_statement, owner_line, statement_start
from memprof.collect.census import VarObservation
from memprof.collect.graphs import ForwardRecord
from memprof.collect.timeline import IterationRecord, RunData
from memprof.report.model import Finding, FindingKind, Severity
from memprof.units import fmt_bytes

CONSECUTIVE = 3  # increases in a row that make an accumulation
LINGER_SHARE = 0.05  # the spec: dropping it must lower the peak by at least 5%
RETAINED_MIN_BYTES = 4096  # saved tensors below this are not worth a warning...
RETAINED_MIN_SHARE = 0.005  # ...nor below this share of the iteration's peak


def _line_for(obs: VarObservation, rebinding: bool = False) -> tuple[str, int]:
    """(file, line) of the statement changing the variable: in the frame's function, or for
    ``obj.attr`` in ``obj``'s class (``self.attr += ...`` in a method, maybe in another file)."""
    line = find_statement(obs.file, obs.function, obs.first_line, obs.line, obs.path, rebinding=rebinding)
    if line is not None:
        return obs.file, line
    if "." in obs.path and obs.owner_file:
        line = owner_line(obs.owner_file, obs.path, rebinding=rebinding)
        if line is not None:
            return obs.owner_file, line
    return obs.file, obs.line


@dataclass
class _Series:
    obs: list[VarObservation] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)


def _increasing(values: list[int], n: int = CONSECUTIVE) -> bool:
    if len(values) < n + 1:
        return False
    tail = values[-(n + 1):]
    return all(b > a for a, b in zip(tail, tail[1:], strict=False))


class AccumulationDetector:
    def __init__(self) -> None:
        self.series: dict[tuple[str, str, str], _Series] = defaultdict(_Series)

    def observe(self, it: IterationRecord) -> list[Finding]:
        out = []
        for obs in it.variables:
            s = self.series[obs.key]
            s.obs.append(obs)
            s.steps.append(it.index)
            if len(s.obs) > 16:
                del s.obs[:-16], s.steps[:-16]
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
        history = _increasing([o.graph.nodes for o in window])
        count = last.is_container and _increasing([o.tensors for o in window])
        grows_bytes = _increasing([o.bytes for o in window])
        if not (history or count or grows_bytes):
            return None
        per_step = max(0, (last.bytes + last.graph.saved_bytes - window[0].bytes - window[0].graph.saved_bytes) // steps)
        with_graph = last.graph.graphs > 0
        name = last.path
        if history and not last.is_container:
            nodes = (last.graph.nodes - window[0].graph.nodes) // steps
            message = (
                f"{name} accumulates the autograd history of every step "
                f"(+{nodes} graph nodes per step, kept alive until {name} is dropped)"
            )
            advice = f"accumulate a number, not the graph: `{name} += loss.item()` (or `loss.detach()`)"
            severity = Severity.WARNING
        elif with_graph:
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
        file, line = _line_for(last)
        return Finding(
            kind=FindingKind.ACCUMULATED_TENSOR, severity=severity, message=message, advice=advice,
            file=file, line=line, variable=name, bytes=per_step, step=step,
            extra={"tensors": last.tensors, "graph_nodes": last.graph.nodes, "held_bytes": last.bytes},
        )


class RetainedGraphDetector:
    def __init__(self) -> None:
        self.hits: dict[tuple[str, str, str], int] = defaultdict(int)

    def observe(self, it: IterationRecord, forwards: dict[int, ForwardRecord]) -> list[Finding]:
        out = []
        for obs in it.variables:
            g = obs.graph
            if not g.saved_root_keys or g.saved_bytes < max(RETAINED_MIN_BYTES, RETAINED_MIN_SHARE * it.peak_bytes):
                continue
            old = g.first_seen is not None and g.first_seen < it.index
            backward_done = [forwards[k] for k in g.forward_keys if k in forwards and forwards[k].backpropagated]
            if not (old or backward_done):
                continue
            self.hits[obs.key] += 1
            if self.hits[obs.key] < 2:
                continue
            name = obs.path
            if backward_done and backward_done[0].backward_site is not None:
                file, line = backward_done[0].backward_site
                line = statement_start(file, line)
                message = (
                    f"{name} holds an autograd graph whose saved tensors ({fmt_bytes(g.saved_bytes)}) outlive its "
                    "backward: backward ran with retain_graph=True and the graph is still referenced"
                )
                advice = (
                    "drop retain_graph=True unless you backpropagate through this graph again; "
                    f"keep `loss.item()` or `loss.detach()` in {name}"
                )
            else:
                file, line = _line_for(obs)
                message = (
                    f"{name} keeps {g.graphs_with_saved} autograd graph(s) alive with "
                    f"{fmt_bytes(g.saved_bytes)} of saved tensors that no backward will free"
                )
                advice = (
                    f"store `.detach()`ed tensors in {name}, or compute them under `torch.no_grad()` "
                    "if they need no gradient"
                )
            out.append(Finding(
                kind=FindingKind.RETAINED_GRAPH, severity=Severity.WARNING, message=message, advice=advice,
                file=file, line=line, variable=name, bytes=g.saved_bytes, step=it.index,
                extra={"graphs": g.graphs_with_saved},
            ))
        return out


class MissingNoGradDetector:
    def __init__(self) -> None:
        self.dropped: dict[tuple[str, int], list[ForwardRecord]] = defaultdict(list)
        self.max_saved: dict[str, int] = defaultdict(int)

    def note_saved(self, rec: ForwardRecord) -> None:
        self.max_saved[rec.module] = max(self.max_saved[rec.module], rec.saved_bytes)

    def dropped_forward(self, rec: ForwardRecord, step: int, at_end: bool = False) -> list[Finding]:
        if rec.site is None:
            return []
        self.note_saved(rec)
        recs = self.dropped[rec.site]
        recs.append(rec)
        if len(recs) < 2:
            return []
        file, line = rec.site
        saved = max(self.max_saved[rec.module], max(r.saved_bytes for r in recs))
        kept = " (kept alive until the end of the run)" if at_end else ""
        return [Finding(
            kind=FindingKind.MISSING_NO_GRAD, severity=Severity.WARNING,
            message=(
                f"{len(recs)} calls of {rec.module} recorded autograd history that no backward used{kept}: "
                f"{fmt_bytes(saved)} of activations saved per call for nothing"
            ),
            advice="wrap this evaluation/inference in `with torch.no_grad():` (or `torch.inference_mode()`)",
            file=file, line=statement_start(file, line), variable=rec.module, bytes=saved, step=step,
            extra={"module": rec.module, "calls": len(recs)},
        )]


class LingeringDetector:
    def __init__(self) -> None:
        self.prev: IterationRecord | None = None
        self.hits: dict[tuple[str | None, str | None], int] = defaultdict(int)

    def observe(self, it: IterationRecord) -> list[Finding]:
        out: list[Finding] = []
        self.prev = it
        by_var: dict[tuple[str | None, str | None], list[Any]] = defaultdict(list)
        for c in it.lingering:
            if c.path is not None and c.freed_before_end:
                by_var[(c.file, c.path)].append(c)
        for key, cands in by_var.items():
            total = sum(c.saving for c in cands)
            peak = max(c.peak for c in cands)
            if total < LINGER_SHARE * peak:
                continue
            self.hits[key] += 1
            if self.hits[key] < 2:
                continue
            c = cands[0]
            assert c.file is not None and c.path is not None
            line = find_statement(c.file, c.function or "", c.first_line or 0, c.line, c.path, rebinding=True)
            share = total / max(peak, 1)
            out.append(Finding(
                kind=FindingKind.LINGERING_TENSOR,
                severity=Severity.WARNING if it.phase == "train" else Severity.INFO,
                message=(
                    f"{c.path} still holds {fmt_bytes(sum(c.nbytes for c in cands))} from the previous iteration "
                    f"at this iteration's peak; dropping it earlier lowers the peak by {fmt_bytes(total)} ({share:.0%})"
                ),
                advice=(
                    f"`del {c.path}` once it is used, or keep only what you need of it "
                    f"(a slice, `.cpu()`, a number) so the peak drops by about {fmt_bytes(total)}"
                ),
                file=c.file, line=line if line is not None else c.line, variable=c.path, bytes=total, step=it.index,
                extra={"share_of_peak": round(share, 4)},
            ))
        return out


def growth_finding(data: RunData, tracker_refs: list[Any] | None = None) -> Finding | None:
    its = [it for it in data.iterations if it.phase == "train" and (it.detailed or data.device_type == "cuda")]
    its = its[2:]  # optimizer state appears in the first steps
    if len(its) < 6:
        return None
    ends = [it.end_bytes for it in its]
    # The longest increasing run at the end.
    start = len(ends) - 1
    while start > 0 and ends[start] > ends[start - 1]:
        start -= 1
    run = ends[start:]
    if len(run) < 6:
        return None
    growth = run[-1] - run[0]
    if growth < max(1 << 20, 0.02 * max(data.peak_bytes, 1)):
        return None
    per_step = growth // (len(run) - 1)
    first_step = its[start].index
    file = line = None
    if tracker_refs:
        by_site: dict[tuple[str, int], int] = defaultdict(int)
        for r in tracker_refs:
            if r.step >= first_step and r.category >= 3 and r.site is not None:
                by_site[r.site] += r.nbytes
        if by_site:
            (file, line), _ = max(by_site.items(), key=lambda kv: kv[1])
    return Finding(
        kind=FindingKind.MEMORY_GROWTH, severity=Severity.WARNING,
        message=f"memory at step boundaries grows by {fmt_bytes(per_step)} per step over {len(run)} steps",
        advice="find what keeps a reference to each step's tensors (lists, dicts, attributes) and drop it",
        file=file, line=line, bytes=per_step, step=its[-1].index,
    )


def fragmentation_finding(data: RunData) -> Finding | None:
    c = data.cuda
    if not c:
        return None
    reserved, allocated = c.get("reserved_bytes", 0), c.get("allocated_bytes", 0)
    peak_reserved = c.get("reserved_peak_bytes", reserved)
    peak_alloc = c.get("allocated_peak_bytes", allocated)
    waste = peak_reserved - peak_alloc
    if waste < max(512 << 20, 0.3 * max(peak_reserved, 1)):
        return None
    retries = c.get("num_alloc_retries", 0)
    return Finding(
        kind=FindingKind.FRAGMENTATION, severity=Severity.WARNING if retries else Severity.INFO,
        message=(
            f"the allocator reserved {fmt_bytes(peak_reserved)} at most while tensors used {fmt_bytes(peak_alloc)} "
            f"at most: {fmt_bytes(waste)} cached but not usable for the requests made"
            + (f"; {retries} allocation(s) had to free the cache and retry" if retries else "")
        ),
        advice="set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True so segments can grow instead of splitting",
        bytes=waste,
    )


def oom_finding(data: RunData, exc: BaseException | None) -> Finding:
    file = line = None
    tb = exc.__traceback__ if exc is not None else None
    from memprof.collect.sites import is_user_file

    while tb is not None:
        fn = tb.tb_frame.f_code.co_filename
        if is_user_file(fn):
            file, line = os.path.abspath(fn), tb.tb_lineno
        tb = tb.tb_next
    cap = data.oom
    parts = []
    if cap is not None:
        held = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in sorted(cap.breakdown.items(), key=lambda kv: -kv[1]) if v)
        req = f"requested {fmt_bytes(cap.requested_bytes)} with " if cap.requested_bytes else ""
        limit = f" of {fmt_bytes(cap.limit_bytes)}" if cap.limit_bytes else ""
        parts.append(f"{req}{fmt_bytes(cap.live_bytes)} in use{limit} at step {cap.step}: {held}")
    message = "the run ran out of memory" + (f": {parts[0]}" if parts else "")
    return Finding(
        kind=FindingKind.OOM, severity=Severity.ERROR, message=message,
        advice="see the batch size recommendation, or the largest tensors below",
        file=file, line=line, bytes=cap.requested_bytes or 0 if cap else 0,
        step=cap.step if cap else None,
    )
