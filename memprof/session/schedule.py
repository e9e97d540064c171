"""When to look closely: detail or watch for the next iteration, and which steps are sampled.

Detail is costly, watching is cheap. The first ``detail_steps`` iterations run in detail; then the
session watches, reading one counter at each boundary (the CUDA allocator's bytes in use, or on CPU
the CPU counter's or the C heap's), and detail comes back for a few iterations when that counter
grows past what detail saw, when the phase changes (training <-> evaluation), and periodically with a backoff.

``--detail full`` keeps detail on every iteration; what rarely changes (the census, gradients per
module, the saved-tensor hook) is then looked at on sampled steps only.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING

from memprof.collect.heap import heap_in_use_bytes
from memprof.model.run import IterationRecord
from memprof.session import config as cfg_mod
from memprof.session.config import FULL_DETAIL_PERIOD, PHASE_SAMPLED_STEPS, WATCH_MARGIN_BYTES

if TYPE_CHECKING:
    from memprof.session.core import Session

# A periodic look (not one for a memory change or a new phase) waits until watching has lasted
# this many times what the last detailed stretch took: at most ~1% of the run's time goes to them,
# however costly a detailed step is (an LBFGS step of many passes, an RL episode of many calls).
PERIODIC_WAIT_FACTOR = 100


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Schedule:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._rearm = 0
        self._watch_period = 16
        self._watched_since_detail = 0
        self._counter_high = 0
        self._sample_until = 0  # --detail full: iterations before this index are sampled (a new phase)
        self._next_census = 0  # --detail full: the index from which a census is due again
        self._detail_on_at: float | None = None  # when the current detailed stretch began
        self._detail_spent = 0.0  # how long the last detailed stretch took...
        self._detail_off_at = 0.0  # ...and when it ended

    def sampled_step(self) -> bool:
        """Where ``--detail full`` looks at what rarely changes (the full-detail steps of the
        default mode always do): its first ``detail_steps`` iterations, then every 16th, and the
        first iterations of a new phase (training, evaluation)."""
        s = self.session
        i = s.steps.index
        return (s.config.detail != "full" or i < s.config.detail_steps or i % FULL_DETAIL_PERIOD == 0
                or i < self._sample_until)

    def census_sampled(self) -> bool:
        """A sampled step for the census: as :meth:`sampled_step`, but with ``--detail full`` at
        most CENSUS_SHARE of the run's time goes to it (see :meth:`census_done`)."""
        s = self.session
        i = s.steps.index
        return s.config.detail != "full" or i < s.config.detail_steps or i >= self._next_census

    def census_done(self, index: int, took: float, step_seconds: float) -> None:
        """The next sampled census: every FULL_DETAIL_PERIOD-th step, fewer where a census costs
        more than CENSUS_SHARE of a step's time (never fewer than every 256th)."""
        step_time = max(step_seconds, 1e-6)
        period = min(256, max(FULL_DETAIL_PERIOD, math.ceil(took / (cfg_mod.CENSUS_SHARE * step_time))))
        self._next_census = index - index % FULL_DETAIL_PERIOD + period

    def phase_changed(self, index: int) -> None:
        """A new phase begins after iteration ``index``: its next iterations are sampled."""
        self._sample_until = index + 1 + PHASE_SAMPLED_STEPS

    def diagnosis_due(self, rec: IterationRecord, last: IterationRecord | None) -> bool:
        """Whether this detailed iteration gets a census of the user's variables and the doctor.

        Always in the default mode, where detail is already a sample. With ``--detail full``,
        every step is measured op by op, but the census (a walk of the user's frames, objects and
        graphs: most of a small step's cost) runs on the sampled steps and wherever it can find
        something new: when memory at the boundary, the phase or the lingering tensors changed
        since the last census, and while a graph from an earlier iteration is alive (a kept
        history holds no new bytes).
        """
        if (self.census_sampled() or last is None or rec.end_bytes != last.end_bytes
                or rec.phase != last.phase or rec.lingering or last.lingering):
            return True
        index = rec.index
        for r in self.session.forwards.by_node.values():
            if r.step < index:
                return True
        return False

    def decide(self, phase: str) -> None:
        """Decide whether the next iteration runs in detail, and switch."""
        s = self.session
        cfg = s.config
        if cfg.detail == "off":
            s.set_detail(False)
            return
        if cfg.detail == "full" or s.tracker.limit is not None:
            s.set_detail(True)
            return
        index = s.steps.index
        want = index + 1 < cfg.detail_steps
        if phase != s.steps.phase:
            self._rearm = max(self._rearm, 4)  # a new phase (training <-> evaluation): look again
        counter = None if s.cuda.active else self._cpu_bytes()
        if counter is None:
            counter = self.counter()
        if s.detail:
            self._counter_high = max(self._counter_high, counter)
            self._watched_since_detail = 0
        else:
            last = s.steps.last_detailed
            self._watched_since_detail = index - (last.index if last else 0)
            # The allocator's bytes in use (CUDA's; on CPU the CPU counter's or the C heap's, else
            # the resident set) at a boundary: a margin above the highest that detail saw means
            # memory beyond what it measured.
            if counter > self._counter_high + WATCH_MARGIN_BYTES:  # memory beyond what detail saw: look again
                self._rearm = max(self._rearm, 2)
                self._counter_high = counter
            elif (self._watched_since_detail >= self._watch_period
                  and time.perf_counter() - self._detail_off_at >= PERIODIC_WAIT_FACTOR * self._detail_spent):
                self._rearm = max(self._rearm, 2)
                self._watch_period = min(self._watch_period * 2, 4096)
        if self._rearm > 0:
            self._rearm -= 1
            want = True
        self._time_detail(s.detail, want)
        s.set_detail(want)

    def _time_detail(self, on: bool, want: bool) -> None:
        """Note how long each detailed stretch lasts (for the periodic looks' pace)."""
        if on == want:
            return
        now = time.perf_counter()
        if want:
            self._detail_on_at = now
        else:  # the first stretch (the run's first iterations, with its one-off costs) is not a pace
            if self._detail_on_at is not None:
                self._detail_spent = now - self._detail_on_at
            self._detail_off_at = now
            self._detail_on_at = None

    def _cpu_bytes(self) -> int | None:
        """On CPU: the CPU counter's bytes where it counts (exact and ~0.3 us), else the C heap's
        (mallinfo2 walks the heap's arenas: ~30 us)."""
        c = self.session.cpu_counter.read()
        return c[0] if c is not None else heap_in_use_bytes()

    def counter(self) -> int:
        cuda = self.session.cuda
        if cuda.active:
            try:
                return cuda.allocated()
            except Exception:
                return 0
        return rss_bytes()
