"""The record of each iteration: opened, measured (peak, end, frontier, census), closed.

:mod:`memprof.session.boundaries` says where iterations end; this module records them. A detailed
iteration is measured op by op by the storage tracker; a watched one gets a row of figures (no
object) and, at the check's pace, one look at a counter: the CUDA allocator's bytes in use and peak,
or on CPU the op hook's count of the CPU allocator's bytes (their highest since the last look:
exact), else the C heap's bytes; their change since the last detailed step moves the watched figures.
The steps are kept in bounded memory (:class:`~memprof.model.history.StepHistory`), so a run of
any length has a report of bounded size and a stop of bounded time.
"""

from __future__ import annotations

import time
from types import FrameType
from typing import TYPE_CHECKING

from memprof.collect.census import census, live_tensors
from memprof.collect.heap import heap_in_use_bytes
from memprof.model.history import EVAL, StepHistory
from memprof.model.run import IterationRecord, frontier_from_live
from memprof.session.config import WATCH_MARGIN_BYTES

if TYPE_CHECKING:
    from memprof.session.core import Session


class Steps:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.history = StepHistory()
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
        # The latest figures known (peak, end): a watched step's until a counter says otherwise.
        self._figures = (0, 0)
        self._heap_base: int | None = None  # the C heap's bytes at the last detailed step's end
        # The CPU counter's bytes, the tracker's live bytes and the step's peak at the last detailed
        # step's end: a watched step's figures are the tracker's then, moved by what the counter
        # counted since.
        self._counter_base: tuple[int, int, int] | None = None  # (counted, live, the step's peak)
        self.run_peak_cpu = 0  # the highest the CPU counter saw in watched steps, as the tracker counts

    @property
    def iterations(self) -> list[IterationRecord]:
        """The steps kept (all of a short run's; see :class:`~memprof.model.history.StepHistory`)."""
        return self.history.records()

    @property
    def count(self) -> int:
        """How many steps were recorded (kept or not)."""
        return self.history.count

    @property
    def last(self) -> IterationRecord | None:
        return self.history.last()

    def set_last_end(self, end: int) -> None:
        """The last step ends with ``end`` bytes (an evaluation's last model call): never 0 from
        a call that measured nothing, never above the step's peak."""
        last = self.history.last()
        if last is not None and end > 0:
            self.history.set_last(end=min(end, last.peak_bytes))

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
        if self.session.publisher.due(now - self._last_publish):
            self._last_publish = now
            self.session.publisher.publish()

    def watch_boundary(self, phase: str) -> None:
        """A boundary in watch mode: one row and one look at the counter, at every step when steps
        take 2 ms or more (the look costs ~15 us), else every 50 ms."""
        s = self.session
        now = time.perf_counter()
        seconds = now - self._t0
        peak, end = self._figures
        self.history.add_watched(self.index, EVAL if phase == "eval" else 0, peak, end, self.batch, seconds)
        if seconds >= 0.002:
            self._next_check = now
        self.index += 1
        s.forwards.step = self.index
        self._t0 = now
        self.batch = None
        s.boundaries.new_iteration()
        if now >= self._next_check:
            self._next_check = now + 0.05
            self._check()
            s.schedule.decide(phase)
            if s.detail:
                self.begin(self.index)
            self.phase = phase
            self._maybe_publish(now)

    def _check(self) -> None:
        """The watched step just recorded, from a counter: on CUDA the allocator's bytes in use
        and its peak since the last look (exact); on CPU what detail last measured, moved by what
        the CPU counter counted since (exact), or else by the C heap's change since then (an
        estimate; changes under the watch margin are noise)."""
        s = self.session
        cuda = s.cuda
        if cuda.active:
            c = cuda.on_step()
            if c is not None:
                self._figures = (c.allocated_peak_bytes, c.allocated_bytes)
                self.history.set_last(peak=c.allocated_peak_bytes, end=c.allocated_bytes,
                                      cuda_peak=c.allocated_peak_bytes, cuda_reserved=c.reserved_bytes)
                self.run_peak_cuda = max(self.run_peak_cuda, c.allocated_peak_bytes)
                try:
                    cuda.backend.reset_peak(cuda.index)
                except Exception:
                    pass
            return
        if self._counted_figures():
            return
        last, base = self.last_detailed, self._heap_base
        heap = heap_in_use_bytes() if base is not None else None
        if last is None or heap is None or base is None:
            return
        delta = heap - base
        if abs(delta) < WATCH_MARGIN_BYTES:
            delta = 0
        # Never above the run's peak: heap beyond it is either not tensors, or tensors that the
        # schedule's look (the same counter past its margin) is about to count in detail.
        top = max(s.tracker.peak, last.peak_bytes)
        peak = min(max(last.peak_bytes + delta, 0), top)
        end = min(max(last.end_bytes + delta, 0), peak)
        self._figures = (peak, end)
        self.history.set_last(peak=peak, end=end)

    def _counted_figures(self) -> bool:
        """The watched steps since the last look, from the CPU counter (exact): their peak (the
        highest since the last look) and the end now, on top of what the last detailed step
        measured. False where the counter does not count."""
        base = self._counter_base
        c = self.session.cpu_counter.read(restart_peak=True) if base is not None else None
        if c is None or base is None:
            return False
        (live, high), (base_counted, base_live, base_peak) = c, base
        moved = live - base_counted
        peak = max(base_live + high - base_counted, 0)
        end = min(max(base_live + moved, 0), peak)
        self.history.set_last(peak=peak, end=end)
        self.run_peak_cpu = max(self.run_peak_cpu, peak)
        # The steps until the next look: the last detailed step's peak, moved as memory moved (a
        # spike since the last look is this step's, not theirs).
        self._figures = (min(max(base_peak + moved, end), peak), end)
        return True

    def finish(self) -> None:
        """At the end of the run: the run's peak takes in what watching did not count. On CUDA the
        allocator's peak since the last look; on CPU, when the run ended watching, the storages
        alive now that no detailed step counted (a tensor made after the loop), by a heap scan."""
        s = self.session
        if s.cuda.active:
            c = s.cuda.counters()
            if c is not None:
                self.run_peak_cuda = max(self.run_peak_cuda, c.allocated_peak_bytes)
            return
        if s.detail or not self.count:
            return
        self._counted_figures()  # a tensor made and freed after the last look
        tracker = s.tracker
        try:
            for t in live_tensors():
                tracker.ensure(t)
        except Exception as e:
            s.warn(f"the tensors alive at the end were not counted: {e!r}")

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
        elif self.last_detailed is not None:  # watched on CPU: the latest figures known
            peak, end = self._figures
        else:
            peak, end = tracker.step_peak, tracker.live
        rec = IterationRecord(
            index=self.index, phase=phase, detailed=detailed, peak_bytes=peak, end_bytes=end,
            batch_size=self.batch, seconds=time.perf_counter() - self._t0,
            cuda_allocated_peak=cuda_peak, cuda_reserved=cuda_reserved,
        )
        if detailed:
            self._measure(rec, phase, frame)
            rec.end_categories = tuple(tracker.cat)
        if rec.end_bytes > rec.peak_bytes:  # the step's end was alive during the step
            rec.end_bytes = rec.peak_bytes
        if detailed or counters is not None:
            self._figures = (rec.peak_bytes, rec.end_bytes)
        if detailed and counters is None:
            self._heap_base = heap_in_use_bytes()
            c = s.cpu_counter.read(restart_peak=True)
            self._counter_base = (c[0], tracker.live, rec.peak_bytes) if c is not None else None
        self.history.add_record(rec)

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
