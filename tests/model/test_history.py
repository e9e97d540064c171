"""The bounded step history: first and last steps, detailed ones and the peak's kept, each bucket's
extremes between them, a step's end at most its peak, memory that does not grow with the run."""

from __future__ import annotations

import random
import time
import tracemalloc

from memprof.model.history import DETAILED, EVAL, StepHistory
from memprof.model.run import IterationRecord

MiB = 1 << 20


def _fill(h: StepHistory, n: int, peak: object = None, start: int = 0) -> None:
    for i in range(start, start + n):
        p = peak(i) if callable(peak) else 10 * MiB
        h.add(i, 0, p, p // 2, 1, 1e-4)


def _bound(h: StepHistory) -> int:
    return (h.head_size + h.tail_size + 4 * h.buckets.size + len(h._detailed_first)
            + (h._detailed_last.maxlen or 0) + 2)


def test_a_short_run_keeps_every_step() -> None:
    h = StepHistory()
    _fill(h, 300)
    recs = h.records()
    assert [r.index for r in recs] == list(range(300))
    assert h.summary()["kept"] == 300 and h.summary()["bucketed"] == 0


def test_the_steps_kept_are_bounded_whatever_the_length() -> None:
    kept = []
    for n in (1_000, 10_000, 100_000):
        h = StepHistory(head=16, tail=16, buckets=32, detailed_first=4, detailed_last=4)
        _fill(h, n, peak=lambda i: (i * 7919) % 1000 * 1024)
        kept.append(len(h.records()))
        assert kept[-1] <= _bound(h)
        assert h.count == n
    assert kept[2] <= 16 + 16 + 4 * 32 + 2  # a hundred times the steps, the same bound


def test_first_and_last_steps_are_all_kept() -> None:
    h = StepHistory(head=10, tail=20, buckets=8)
    _fill(h, 5_000)
    idx = {r.index for r in h.records()}
    assert set(range(10)) <= idx
    assert set(range(5_000 - 20, 5_000)) <= idx
    assert h.last() is not None and h.last().index == 4_999  # type: ignore[union-attr]


def test_each_bucket_keeps_its_lowest_and_highest_peak_and_end() -> None:
    rng = random.Random(0)
    n = 20_000
    peaks = [rng.randrange(1, 1000) * 1024 for _ in range(n)]
    ends = [rng.randrange(0, p + 1) for p in peaks]
    h = StepHistory(head=8, tail=8, buckets=16)
    for i in range(n):
        h.add(i, 0, peaks[i], ends[i], None, 0.0)
    kept = {r.index: r for r in h.records()}
    b = h.buckets
    assert b.width > 1 and len(b.extremes) <= 16
    for k in range(len(b.extremes)):
        lo = b.base + k * b.width  # type: ignore[operator]
        hi = min(lo + b.width, n - 8)
        span = range(lo, hi)
        for values in (peaks, ends):
            top = max(values[i] for i in span)
            low = min(values[i] for i in span)
            got = [values[i] for i in span if i in kept]
            assert top in got and low in got, k
    # the run's highest peak and lowest end are among the steps kept
    assert max(r.peak_bytes for r in kept.values()) == max(peaks)
    assert min(r.end_bytes for r in kept.values()) == min(ends)


def test_a_rising_series_stays_rising() -> None:
    h = StepHistory(head=4, tail=4, buckets=8)
    _fill(h, 10_000, peak=lambda i: 2 * i * 1024)
    ends = [r.end_bytes for r in h.records()]
    assert ends == sorted(ends) and len(set(ends)) == len(ends)


def _detailed(i: int, peak: int) -> IterationRecord:
    return IterationRecord(index=i, phase="train", detailed=True, peak_bytes=peak, end_bytes=peak // 2,
                           batch_size=4, seconds=0.01, frontier=[(1, 2)])


def test_detailed_steps_and_the_peak_step_keep_their_records() -> None:
    h = StepHistory(head=4, tail=4, buckets=4, detailed_first=3, detailed_last=3)
    peak_rec = None
    for i in range(50_000):
        if i % 1000 == 0:
            rec = _detailed(i, (90 if i == 7000 else 5) * MiB)
            peak_rec = rec if i == 7000 else peak_rec
            h.add_record(rec)
        else:
            h.add(i, 0, 4 * MiB, 2 * MiB, 4, 1e-4)
    recs = h.records()
    kept = [r for r in recs if r.frontier]  # records, not rows (a bucket's extreme may be a detailed row)
    indices = [r.index for r in kept]
    assert indices == [0, 1000, 2000, 7000, 47_000, 48_000, 49_000]  # first, peak, last detailed steps
    assert peak_rec in recs  # the peak's record itself
    assert h.peak_record is peak_rec and h.detailed_count == 50
    assert all(r.detailed for r in recs if r.index % 1000 == 0)


def test_a_steps_end_is_at_most_its_peak() -> None:
    h = StepHistory()
    h.add(0, 0, 7 * MiB, 20 * MiB, None, 0.0)
    rec = IterationRecord(index=1, phase="eval", detailed=True, peak_bytes=3 * MiB, end_bytes=9 * MiB,
                          batch_size=None, seconds=0.0)
    h.add_record(rec)
    h.add(2, EVAL, 5 * MiB, 1 * MiB, None, 0.0)
    h.set_last(end=50 * MiB)
    assert all(r.end_bytes <= r.peak_bytes for r in h.records())
    assert [r.end_bytes for r in h.records()] == [7 * MiB, 3 * MiB, 5 * MiB]
    assert [r.phase for r in h.records()] == ["train", "eval", "eval"]


def test_set_last_corrects_the_row_and_the_record() -> None:
    h = StepHistory()
    h.add(0, DETAILED, 4, 2, None, 0.0)
    h.set_last(peak=10, end=8, cuda_peak=10, cuda_reserved=64)
    [r] = h.records()
    assert (r.peak_bytes, r.end_bytes, r.cuda_allocated_peak, r.cuda_reserved) == (10, 8, 10, 64)
    rec = _detailed(1, 100)
    h.add_record(rec)
    h.set_last(end=30)
    assert rec.end_bytes == 30 and h.records()[-1] is rec


def test_recent_walks_the_tail_only() -> None:
    h = StepHistory(tail=8)
    _fill(h, 100)
    assert [i for i, _, _ in h.recent(0)] == list(range(92, 100))
    assert [i for i, _, _ in h.recent(97)] == [97, 98, 99]
    assert list(h.recent(100)) == []


def test_memory_and_time_per_step_do_not_grow_with_the_run() -> None:
    h = StepHistory()
    _fill(h, 20_000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    _fill(h, 200_000, start=20_000)
    took = time.perf_counter() - t0
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 256 * 1024, grown  # 200k more steps: no memory per step
    assert took < 10.0, took
    t0 = time.perf_counter()
    recs = h.records()
    assert len(recs) < 4_000 and time.perf_counter() - t0 < 1.0


def test_watched_steps_stored_as_runs_read_as_every_step() -> None:
    """A run of watched steps of the same figures is buffered; what is read is the same as
    adding each step's row."""
    a, b = StepHistory(head=8, tail=8, buckets=4), StepHistory(head=8, tail=8, buckets=4)
    i = 0
    for figures, n in [((100, 50), 5), ((120, 60), 40), ((90, 40), 3), ((300, 10), 200), ((80, 80), 9)]:
        for _ in range(n):
            a.add(i, 0, figures[0], figures[1], 4, 0.001 * (i % 7))
            b.add_watched(i, 0, figures[0], figures[1], 4, 0.001 * (i % 7))
            i += 1
        assert b.count == a.count == i
    assert [(r.index, r.peak_bytes, r.end_bytes, r.seconds) for r in b.records()] == \
        [(r.index, r.peak_bytes, r.end_bytes, r.seconds) for r in a.records()]
    assert b.summary() == a.summary() and abs(b.seconds - a.seconds) < 1e-9


def test_buckets_take_runs_as_they_take_each_row() -> None:
    """Rows given in runs of the same figures (grouped, a run looked at once per bucket) keep the
    same extremes and counts as rows added one by one, across bucket edges and merges."""
    from memprof.model.history import Buckets

    rng = random.Random(7)
    for trial in range(40):
        one, runs = Buckets(size=rng.choice([2, 3, 8])), Buckets(size=0)
        runs.size = one.size
        i, rows = rng.randrange(5), []
        for _ in range(rng.randrange(1, 30)):
            peak = rng.choice([10, 20, 30])
            end = rng.choice([1, peak])
            for _ in range(rng.choice([1, 2, 5, 17, 60])):
                rows.append((i, 0, peak, end, 4, 0.001 * i, -1, -1))
                i += 1 + (rng.random() < 0.05)  # an index skipped now and then
        for row in rows:
            one.add(row)
        cut = rng.randrange(len(rows) + 1)
        runs.add_rows(rows[:cut])
        runs.add_rows(rows[cut:])
        assert (runs.width, runs.steps, runs.extremes) == (one.width, one.steps, one.extremes), trial


def test_watched_runs_read_back_exactly_whatever_the_reads_between_them() -> None:
    """Watched steps, flushed at random moments (a read, a correction of the last step) into a
    small tail and buckets, read back as rows added one by one."""
    rng = random.Random(3)
    for trial in range(20):
        a, b = StepHistory(head=5, tail=7, buckets=3), StepHistory(head=5, tail=7, buckets=3)
        figures = (100, 50)
        for i in range(rng.randrange(1, 400)):
            if rng.random() < 0.03:
                figures = (rng.choice([80, 100, 120]), rng.choice([10, 50]))
            secs = 0.001 * (i % 5)
            a.add(i, 0, figures[0], figures[1], 8, secs)
            b.add_watched(i, 0, figures[0], figures[1], 8, secs)
            roll = rng.random()
            if roll < 0.02:
                a.set_last(peak=figures[0] + 1)
                b.set_last(peak=figures[0] + 1)
            elif roll < 0.04:
                assert [r.index for r in b.records()] == [r.index for r in a.records()]
        rows = [(r.index, r.peak_bytes, r.end_bytes, r.seconds) for r in b.records()]
        assert rows == [(r.index, r.peak_bytes, r.end_bytes, r.seconds) for r in a.records()], trial
        assert b.summary() == a.summary() and list(b.recent(0)) == list(a.recent(0)), trial
