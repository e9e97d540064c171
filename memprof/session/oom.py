"""The moment of an out-of-memory: what held memory, captured before the stack unwinds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memprof.collect.native import StorageInfo
from memprof.collect.storage import StorageRef
from memprof.model.categories import CATEGORIES, PRE_LOOP, TRANSIENT_FROM
from memprof.model.run import OomCapture, TensorInfo, frontier_from_live

if TYPE_CHECKING:
    from memprof.session.core import Session


class OomWatch:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.capture: OomCapture | None = None

    def on_oom(self, requested: int | None, source: str) -> None:
        """Record what holds memory now; called at the moment of an out-of-memory (once)."""
        if self.capture is not None:
            return
        s = self.session
        tracker = s.tracker
        live, cat = tracker.live, list(tracker.cat)
        refs: list[StorageRef | StorageInfo] = list(tracker.live_refs())
        failed: StorageRef | StorageInfo | None = None
        if source == "memory-limit" and requested:  # the tracker counted the request that failed: not held
            failed = next((r for r in reversed(refs) if r.seq == tracker.seq), None)
            if failed is not None:
                refs = [r for r in refs if r is not failed]
                live -= failed.nbytes
                cat[failed.category] -= failed.nbytes
        # The failing iteration's frontier so far, the request included: what it needed at least.
        req = requested or 0
        req_scaled = req if failed is None or failed.scaled else 0  # CUDA: a large request is a batch's
        failed_scaled = failed.nbytes if failed is not None and failed.scaled else 0
        need = (live + req, tracker.scaled_live - failed_scaled + req_scaled)
        partial = frontier_from_live(tracker.local_peaks + [(tracker.live, tracker.scaled_live), need])
        pre = [r for r in refs if r.step == PRE_LOOP and r.category >= TRANSIENT_FROM]
        pre_fixed = sum(r.nbytes for r in pre if not r.scaled)
        pre_scaled = sum(r.nbytes for r in pre if r.scaled)
        refs = sorted(refs, key=lambda r: -r.nbytes)
        s.optimizers.find_for(list(s.modules.roots.values()))
        by_module: dict[str, int] = {}
        for r in refs:
            name = r.module or ("(before the first step)" if r.step == PRE_LOOP else "(outside modules)")
            by_module[name] = by_module.get(name, 0) + r.nbytes
        largest = [
            TensorInfo(
                bytes=r.nbytes, shape=r.shape, dtype=r.dtype, category=CATEGORIES[r.category].value,
                module=r.module, created_step=r.step, file=r.site[0] if r.site else None,
                line=r.site[1] if r.site else None,
            )
            for r in refs[:10]
        ]
        self.capture = OomCapture(
            requested_bytes=requested, live_bytes=live,
            limit_bytes=s.config.memory_limit_bytes,
            breakdown={c.value: cat[i] for i, c in enumerate(CATEGORIES)},
            by_module=dict(sorted(by_module.items(), key=lambda kv: -kv[1])[:12]),
            largest=largest, step=s.steps.index, source=source,
            partial_frontier=partial, batch_size=s.steps.batch or tracker.batch_size,
            pre_loop_fixed_bytes=pre_fixed, pre_loop_scaled_bytes=pre_scaled,
        )
