"""The record of each iteration: opened, measured (peak, end, frontier, census), closed.

:mod:`memprof.session.boundaries` says where iterations end; this module records them. A detailed
iteration is measured op by op by the storage tracker; a watched one gets a small record and, at
the check's pace, one look at a counter.
"""

from __future__ import annotations

import time
from types import FrameType
from typing import TYPE_CHECKING

from memprof.collect.census import census
from memprof.model.run import IterationRecord, frontier_from_live

if TYPE_CHECKING:
    from memprof.session.core import Session


class Steps:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.iterations: list[IterationRecord] = []
        self.index = 0
        self.phase = "train"
        self.batch: int | None = None  # the open iteration's batch size (its first model call's)
        self.last_detailed: IterationRecord | None = None
        self.run_peak_cuda = 0
        self._t0 = 0.0
        self.opened_in_detail = False  # the open iteration began in detail
        self._last_diagnosed: IterationRecord | None = None  # the last iteration with a census
        self._last_points: list[tuple[int, int]] = []  # the last detailed step's (live, scaled) points...
        self._last_frontier: list[tuple[int, int]] = []  # ...and their frontier
        self._next_check = 0.0
        self._last_publish = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def begin(self, index: int) -> None:
        s = self.session
        tracker = s.tracker
        self.index = index
        s.forwards.step = index
        sampled = s.schedule.sampled_step()
        s.forwards.sample_sites = tracker.sample_sites = sampled
        # Between sampled steps the native tracker infers saved storages: the pack hook rests.
        pack = sampled or not tracker.infers_saved
        tracker.infer_saved = not pack
        s.modules.set_pack(pack)
        self._t0 = time.perf_counter()
        self.batch = None
        s.boundaries.new_iteration()
        self.opened_in_detail = s.detail
        tracker.begin_step(index, min_old_bytes=4096)
        s.lingering.reset()
        if s.cuda.active:
            try:
                s.cuda.backend.reset_peak(s.cuda.index)
            except Exception:
                pass

    def end(self, phase: str, frame: FrameType | None) -> None:
        """The open iteration ends here (a boundary in detail, or the first one after watching)."""
        s = self.session
        with s.lock:
            self.record(phase, frame)
            s.schedule.decide(phase)
            if phase != self.phase:  # a new phase: its next iterations are sampled
                s.schedule.phase_changed(self.index)
            self.begin(self.index + 1)
            self.phase = phase
        self._maybe_publish(time.perf_counter())

    def _maybe_publish(self, now: float) -> None:
        if now - self._last_publish > 0.1:
            self._last_publish = now
            self.session.publisher.publish()

    def watch_boundary(self, phase: str) -> None:
        """A boundary in watch mode: one record and one look at the counter, at every step when steps
        take 2 ms or more (the look costs ~15 us), else every 50 ms."""
        s = self.session
        now = time.perf_counter()
        last = self.last_detailed
        seconds = now - self._t0
        self.iterations.append(IterationRecord(
            index=self.index, phase=phase, detailed=False,
            peak_bytes=last.peak_bytes if last else 0, end_bytes=last.end_bytes if last else 0,
            batch_size=self.batch, seconds=seconds,
        ))
        if seconds >= 0.002:
            self._next_check = now
        self.index += 1
        s.forwards.step = self.index
        self._t0 = now
        self.batch = None
        s.boundaries.new_iteration()
        if now >= self._next_check:
            self._next_check = now + 0.05
            cuda = s.cuda
            if cuda.active:  # exact figures for watched steps on CUDA, at the check's pace
                c = cuda.on_step()
                if c is not None:
                    rec = self.iterations[-1]
                    rec.peak_bytes, rec.end_bytes = c.allocated_peak_bytes, c.allocated_bytes
                    self.run_peak_cuda = max(self.run_peak_cuda, c.allocated_peak_bytes)
                    cuda.backend.reset_peak(cuda.index)
            s.schedule.decide(phase)
            if s.detail:
                self.begin(self.index)
            self.phase = phase
            self._maybe_publish(now)

    def record(self, phase: str, frame: FrameType | None) -> None:
        s = self.session
        tracker = s.tracker
        detailed = self.opened_in_detail and s.detail
        cuda_peak = cuda_reserved = None
        counters = s.cuda.on_step() if s.cuda.active else None
        if counters is not None:
            cuda_peak = counters.allocated_peak_bytes
            cuda_reserved = counters.reserved_bytes
            self.run_peak_cuda = max(self.run_peak_cuda, cuda_peak)
        if detailed:
            peak, end = tracker.step_peak, tracker.live
        elif counters is not None:
            peak, end = counters.allocated_peak_bytes, counters.allocated_bytes
        else:  # watched on CPU: what detail last measured; the counter guards against change
            last = self.last_detailed
            peak = last.peak_bytes if last else tracker.step_peak
            end = last.end_bytes if last else tracker.live
        rec = IterationRecord(
            index=self.index, phase=phase, detailed=detailed, peak_bytes=peak, end_bytes=end,
            batch_size=self.batch, seconds=time.perf_counter() - self._t0,
            cuda_allocated_peak=cuda_peak, cuda_reserved=cuda_reserved,
        )
        if detailed:
            self._measure(rec, phase, frame)
        self.iterations.append(rec)

    def _measure(self, rec: IterationRecord, phase: str, frame: FrameType | None) -> None:
        """What a detailed iteration adds to its record: the batch frontier, gradients and
        categories, lingering storages, and (when due) the census and the doctor's look."""
        s = self.session
        tracker = s.tracker
        points = tracker.local_peaks + [(tracker.live, tracker.scaled_live)]
        if points != self._last_points:  # a steady loop repeats its points step after step
            self._last_points, self._last_frontier = points, frontier_from_live(points)
        rec.frontier = self._last_frontier
        s.modules.end_step()
        if not s.boundaries.optimizer_stepped:  # else each optimizer's hooks did it, moments ago
            if phase == "train":
                s.modules.record_gradients()
            s.optimizers.categorise_all()
        rec.lingering = s.lingering.resolve()
        if s.schedule.diagnosis_due(rec, self._last_diagnosed):
            t0 = time.perf_counter()
            rec.variables = census(frame, max_frames=16, forward_keys=set(s.forwards.by_node), step=self.index)
            s.doctor.observe(rec, s.forwards.by_node)
            self._last_diagnosed = rec
            s.schedule.census_done(self.index, time.perf_counter() - t0, rec.seconds)
        self.last_detailed = rec
        if phase == "train":
            s.replays.make_once()
