"""Old storages alive at an iteration's peak: who holds them, and what dropping them would save."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from memprof.collect.census import names_of_storages
from memprof.collect.sites import main_thread_frame
from memprof.model.run import LingeringCandidate
from memprof.session.config import LINGER_MIN_SHARE

if TYPE_CHECKING:
    from memprof.session.core import Session


class Lingering:
    """Fed by the tracker's peak watch during an iteration; resolved at its end."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._found: dict[int, LingeringCandidate] = {}  # alive at this iteration's latest high
        self._deferred: list[LingeringCandidate] = []  # alive at the last iteration's end

    def reset(self) -> None:
        """A new iteration begins."""
        self._found = {}

    def on_peak(self, live: int) -> None:
        """A new high of this iteration: note old storages still alive, and who holds them."""
        tracker = self.session.tracker
        tracker.peak_watch_at = int(live * 1.01)
        # Within an iteration old storages only die and the watch fires only higher: once no old
        # storage is worth naming, none will be until the next iteration (begin_step re-arms it).
        if tracker.old_transient_bytes < LINGER_MIN_SHARE * live:
            self._found = {}
            tracker.peak_watch_at = sys.maxsize
            return
        big = tracker.old_transient_items(-(-live // 100))  # at least 1% of live bytes
        if not big:
            tracker.peak_watch_at = sys.maxsize
            return
        names = names_of_storages(main_thread_frame(), {k for k, _, _, _ in big})
        found: dict[int, LingeringCandidate] = {}
        for k, nbytes, step, seq in big:
            c = LingeringCandidate(key=k, nbytes=nbytes, created_step=step, seq=seq)
            if k in names:
                path, frame = names[k]
                code = frame.f_code
                c.path, c.file, c.function = path, code.co_filename, code.co_name
                c.first_line, c.line = code.co_firstlineno, frame.f_lineno
            found[k] = c
        self._found = found
        tracker.set_linger(list(found))

    def resolve(self) -> list[LingeringCandidate]:
        """Old storages alive at a peak that died soon after: what dropping them earlier would save.

        Freed later in the same iteration: the peak without it is the higher of (the peak minus
        its bytes) and the highest point after it died. Still alive at the iteration's end and
        freed during the next one: it was there for the whole rest of the iteration.
        """
        tracker = self.session.tracker

        def alive(c: LingeringCandidate) -> bool:  # its own storage, not a newer one under the same key
            return tracker.seq_of(c.key) == c.seq

        confirmed = []
        for c in self._deferred:
            if not alive(c):
                c.freed_before_end = True
                c.saving = c.nbytes
                confirmed.append(c)
        deferred = []
        peak = tracker.step_peak
        for c in self._found.values():
            c.peak = peak
            idx = tracker.linger_index(c.key)
            if idx >= 0:
                after = max([lp[0] for lp in tracker.local_peaks[idx:]] + [tracker.live])
                c.freed_before_end = True
                c.saving = max(0, min(c.nbytes, peak - after))
                confirmed.append(c)
            elif alive(c):
                deferred.append(c)
        self._deferred = deferred
        tracker.set_linger([])
        return confirmed
