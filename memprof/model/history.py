"""A run's steps in bounded memory, whatever the run's length.

Kept: every step of the first :data:`HEAD_STEPS` and the last :data:`TAIL_STEPS`; the record of
the first :data:`DETAILED_FIRST` and the last :data:`DETAILED_LAST` detailed steps, and of the
step with the highest peak; between them, a downsampled history of at most :data:`BUCKETS`
buckets of consecutive steps, each keeping its steps with the lowest and the highest peak and the
lowest and the highest end, so that a chart or the growth detector sees the same shape as with
every step. When the buckets are full, neighbours merge (each bucket then covers twice as many
steps): about 4 x BUCKETS steps stay between the head and the tail.

A step is a row (a tuple in a preallocated ring of the tail's size), never a record object per
step, and the memory is the same at any length; records are made for the steps kept, when asked
for. Watched steps come in runs of the same figures (the latest a counter gave): a run is one
list of step times until something reads the history, then stored at once, its middle at one
look per bucket and run (:meth:`StepHistory.add_watched`: a list append a step). A step's end is
at most its peak (the memory alive at its end was alive during the step): a larger end was
measured at another moment, and is cut to the peak.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import groupby, repeat
from operator import itemgetter

from memprof.model.run import IterationRecord

HEAD_STEPS = 512
TAIL_STEPS = 512
BUCKETS = 512
DETAILED_FIRST = 256
DETAILED_LAST = 256

DETAILED, EVAL = 1, 2  # a row's flags
_NONE = -1  # an absent batch size or CUDA figure, in a row
_EMPTY = (0, 0, 0, 0, _NONE, 0.0, _NONE, _NONE)  # a ring slot not written yet

# index, flags, peak, end, batch size (-1: none), seconds, CUDA allocated peak, CUDA reserved (-1: none)
Row = tuple[int, int, int, int, int, float, int, int]
_figures = itemgetter(2, 3)  # a row's (peak, end)


def _opt(v: int | None) -> int:
    return _NONE if v is None else int(v)


def row_of(rec: IterationRecord) -> Row:
    flags = (DETAILED if rec.detailed else 0) | (EVAL if rec.phase == "eval" else 0)
    return (rec.index, flags, rec.peak_bytes, min(rec.end_bytes, rec.peak_bytes), _opt(rec.batch_size),
            rec.seconds, _opt(rec.cuda_allocated_peak), _opt(rec.cuda_reserved))


def record_of(row: Row) -> IterationRecord:
    index, flags, peak, end, batch, seconds, cpeak, cres = row
    return IterationRecord(
        index=index, phase="eval" if flags & EVAL else "train", detailed=bool(flags & DETAILED),
        peak_bytes=peak, end_bytes=end, batch_size=None if batch == _NONE else batch, seconds=seconds,
        cuda_allocated_peak=None if cpeak == _NONE else cpeak, cuda_reserved=None if cres == _NONE else cres)


def _ring_read(ring: list[Row], a: int, b: int) -> list[Row]:
    """The rows of counts [a, b) in a ring (at most its size of them), in order: one or two slices."""
    if b <= a:
        return []
    size = len(ring)
    i, n = a % size, b - a
    return ring[i:i + n] if i + n <= size else ring[i:] + ring[:i + n - size]


def _ring_write(ring: list[Row], a: int, rows: list[Row]) -> None:
    """Store rows from count ``a`` on (at most the ring's size of them): one or two slices."""
    size, n = len(ring), len(rows)
    i = a % size
    if i + n <= size:
        ring[i:i + n] = rows
    else:
        split = size - i
        ring[i:] = rows[:split]
        ring[:n - split] = rows[split:]


def _merge(a: list[Row], b: list[Row]) -> list[Row]:
    """Two buckets' extremes as one's: [lowest peak, highest peak, lowest end, highest end]."""
    return [min(a[0], b[0], key=lambda r: r[2]), max(a[1], b[1], key=lambda r: r[2]),
            min(a[2], b[2], key=lambda r: r[3]), max(a[3], b[3], key=lambda r: r[3])]


class Buckets:
    """The downsampled middle of the run: consecutive steps in at most ``size`` buckets of
    ``width`` steps, each keeping its extremes (rows). Steps must come in order of index."""

    def __init__(self, size: int = BUCKETS) -> None:
        self.size = size
        self.width = 1
        self.base: int | None = None  # the index of the first step in a bucket
        self.extremes: list[list[Row]] = []
        self.steps = 0

    def add(self, row: Row) -> None:
        if self.base is None:
            self.base = row[0]
        self.steps += 1
        b = (row[0] - self.base) // self.width
        while b >= self.size:  # full: neighbours merge, each bucket covers twice as many steps
            old = self.extremes
            self.extremes = [_merge(old[k], old[k + 1]) if k + 1 < len(old) else old[k]
                             for k in range(0, len(old), 2)]
            self.width *= 2
            b = (row[0] - self.base) // self.width
        ext = self.extremes
        if b >= len(ext):
            ext.append([row, row, row, row])
            return
        e = ext[b]
        peak, end = row[2], row[3]
        if peak < e[0][2]:
            e[0] = row
        if peak > e[1][2]:
            e[1] = row
        if end < e[2][3]:
            e[2] = row
        if end > e[3][3]:
            e[3] = row

    def add_rows(self, rows: list[Row]) -> None:
        """Rows in order, as :meth:`add` each. Watched steps come in runs of the same peak and end:
        in a bucket only a run's first row can be an extreme (a tie keeps the row there), so a run
        is looked at once per bucket it covers, its other rows only counted."""
        for _, group in groupby(rows, key=_figures):  # grouped and listed in C, not row by row
            run = list(group)
            first = run[0]
            self.add(first)
            assert self.base is not None
            base = self.base
            last_b = (first[0] - base) // self.width
            if (run[-1][0] - base) // self.width == last_b:  # the common case: one bucket
                self.steps += len(run) - 1
                continue
            for row in run[1:]:
                if (row[0] - base) // self.width == last_b:
                    self.steps += 1
                    continue
                self.add(row)
                last_b = (row[0] - base) // self.width

    def rows(self) -> Iterator[Row]:
        for e in self.extremes:
            yield from e


class StepHistory:
    """Every step's figures, in bounded memory (see the module's docstring)."""

    def __init__(self, head: int = HEAD_STEPS, tail: int = TAIL_STEPS, buckets: int = BUCKETS,
                 detailed_first: int = DETAILED_FIRST, detailed_last: int = DETAILED_LAST) -> None:
        self.head_size, self.tail_size = head, tail
        self._count = self._eval_count = self.detailed_count = 0
        self._seconds = 0.0  # every step's, kept or not
        # The open run of watched steps: their figures (flags, peak, end, batch: the same for all),
        # the first one's index, and their times.
        self._run: tuple[int, int, int, int] | None = None
        self._run_first = 0
        self._run_seconds: list[float] = []
        self._head: list[Row] = []
        self.buckets = Buckets(buckets)
        # The tail: a ring of rows, allocated once (a row is one tuple: one store a step, where a
        # column per field cost eight).
        self._ring: list[Row] = [_EMPTY] * tail
        self._detailed_first: list[IterationRecord] = []
        self._detailed_first_size = detailed_first
        self._detailed_last: deque[IterationRecord] = deque(maxlen=detailed_last)
        self.peak_record: IterationRecord | None = None  # the detailed step of the highest peak
        self._last_record: IterationRecord | None = None  # the last step, when it has a record
        self._cache: list[IterationRecord] | None = None

    @property
    def count(self) -> int:
        """Steps added, kept or not."""
        return self._count + len(self._run_seconds)

    @property
    def eval_count(self) -> int:
        self.flush()
        return self._eval_count

    @property
    def seconds(self) -> float:
        """Every step's time, summed."""
        self.flush()
        return self._seconds

    # -- adding -----------------------------------------------------------------------------------
    def add_watched(self, index: int, flags: int, peak: int, end: int, batch: int | None, seconds: float) -> None:
        """A watched step's row, the cheap way: a step of the open run's figures whose index
        follows is one append; the run is stored when anything reads the history."""
        if batch is None:
            batch = _NONE
        if end > peak:
            end = peak
        secs = self._run_seconds
        if (flags, peak, end, batch) == self._run and index == self._run_first + len(secs):
            secs.append(seconds)
            return
        self.flush()
        self._run = (flags, peak, end, batch)
        self._run_first = index
        self._run_seconds = [seconds]
        self._last_record = None
        self._cache = None

    def flush(self) -> None:
        """Store the open run of watched steps."""
        run = self._run
        if run is None:
            return
        secs = self._run_seconds
        self._run, self._run_seconds = None, []
        index = self._run_first
        flags, peak, end, batch = run
        k = len(secs)
        # The run's rows, made in C (zip, repeat) rather than one by one.
        rows: list[Row] = list(zip(range(index, index + k), repeat(flags), repeat(peak), repeat(end),
                                   repeat(batch), secs, repeat(_NONE), repeat(_NONE)))
        n0, head, tail = self._count, self.head_size, self.tail_size
        self._count = n0 + k
        self._seconds += sum(secs)
        if flags & EVAL:
            self._eval_count += k
        if n0 < head:
            self._head.extend(rows[:head - n0])
        # The rows that leave the tail for the buckets: counts [lo, hi), older ones from the ring.
        ring = self._ring
        lo, hi = max(n0 - tail, head, 0), n0 + k - tail
        if hi > lo:
            leaving = _ring_read(ring, lo, min(hi, n0))
            if hi > n0:
                leaving += rows[max(0, lo - n0):hi - n0]
            self.buckets.add_rows(leaving)
        start = max(n0, hi)
        _ring_write(ring, start, rows[start - n0:])

    def add(self, index: int, flags: int, peak: int, end: int, batch: int | None, seconds: float,
            cuda_peak: int | None = None, cuda_reserved: int | None = None) -> None:
        """One step's row (a watched step: no record is made)."""
        self.flush()
        if end > peak:
            end = peak
        self._push((index, flags, peak, end, _NONE if batch is None else batch, seconds,
                    _NONE if cuda_peak is None else cuda_peak, _NONE if cuda_reserved is None else cuda_reserved))
        self._last_record = None

    def add_record(self, rec: IterationRecord) -> None:
        """A step with a record (a detailed one): its row, and the record if it is to be kept."""
        self.flush()
        if rec.end_bytes > rec.peak_bytes:
            rec.end_bytes = rec.peak_bytes
        self._push(row_of(rec))
        self._last_record = rec
        if rec.detailed:
            self.detailed_count += 1
            if len(self._detailed_first) < self._detailed_first_size:
                self._detailed_first.append(rec)
            else:
                self._detailed_last.append(rec)
            if self.peak_record is None or rec.peak_bytes > self.peak_record.peak_bytes:
                self.peak_record = rec

    def _push(self, row: Row) -> None:
        self._cache = None
        n = self._count
        self._count = n + 1
        self._seconds += row[5]
        if row[1] & EVAL:
            self._eval_count += 1
        if n < self.head_size:
            self._head.append(row)
        slot = n % self.tail_size
        if n >= self.tail_size and n - self.tail_size >= self.head_size:  # it leaves the tail, not in the head
            self.buckets.add(self._ring[slot])
        self._ring[slot] = row

    # -- the last step ----------------------------------------------------------------------------
    def last(self) -> IterationRecord | None:
        self.flush()
        if not self._count:
            return None
        if self._last_record is not None:
            return self._last_record
        return record_of(self._ring[(self._count - 1) % self.tail_size])

    def set_last(self, peak: int | None = None, end: int | None = None, cuda_peak: int | None = None,
                 cuda_reserved: int | None = None) -> None:
        """Correct the last step's figures (its record's too); its end stays at most its peak."""
        self.flush()
        if not self._count:
            return
        self._cache = None
        slot = (self.count - 1) % self.tail_size
        index, flags, old_peak, old_end, batch, seconds, old_cpeak, old_cres = self._ring[slot]
        new_peak = old_peak if peak is None else peak
        new_end = old_end if end is None else end
        row = (index, flags, new_peak, min(new_end, new_peak), batch, seconds,
               old_cpeak if cuda_peak is None else cuda_peak, old_cres if cuda_reserved is None else cuda_reserved)
        self._ring[slot] = row
        if self.count <= self.head_size:
            self._head[-1] = row
        rec = self._last_record
        if rec is not None:
            rec.peak_bytes, rec.end_bytes = row[2], row[3]
            if cuda_peak is not None:
                rec.cuda_allocated_peak = cuda_peak
            if cuda_reserved is not None:
                rec.cuda_reserved = cuda_reserved

    def recent(self, since: int) -> Iterator[tuple[int, float, int]]:
        """(index, seconds, peak) of the steps from ``since`` on that are still in the tail, in order."""
        self.flush()
        n = self._count
        first = max(since, n - self.tail_size, 0)
        for k in range(first, n):
            row = self._ring[k % self.tail_size]
            yield row[0], row[5], row[2]

    # -- reading ----------------------------------------------------------------------------------
    def records(self) -> list[IterationRecord]:
        """The steps kept, in order of index: records where kept, else made from their rows."""
        self.flush()
        if self._cache is not None:
            return self._cache
        rows: dict[int, Row] = {r[0]: r for r in self._head}
        for r in self.buckets.rows():
            rows[r[0]] = r
        for k in range(max(0, self.count - self.tail_size), self.count):
            r = self._ring[k % self.tail_size]
            rows[r[0]] = r
        kept: dict[int, IterationRecord] = {rec.index: rec for rec in self._detailed_first}
        kept.update((rec.index, rec) for rec in self._detailed_last)
        for rec in (self.peak_record, self._last_record):
            if rec is not None:
                kept[rec.index] = rec
        out = [kept[i] if i in kept else record_of(rows[i]) for i in sorted(rows.keys() | kept.keys())]
        self._cache = out
        return out

    @property
    def kept(self) -> int:
        return len(self.records())

    def summary(self) -> dict[str, int]:
        """How the steps were kept: for the report's ``steps_kept``."""
        return {"total": self.count, "train": self.count - self.eval_count, "eval": self.eval_count,
                "detailed": self.detailed_count, "kept": self.kept, "head": self.head_size,
                "tail": self.tail_size, "bucket_steps": self.buckets.width if self.buckets.steps else 0,
                "bucketed": self.buckets.steps}
