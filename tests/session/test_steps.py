"""Each iteration's record in a session: the run's peak takes in what watching did not measure (a
tensor made after the loop, or between detailed steps; the CUDA allocator's peak since its last
look), watched steps follow the counters, a step's end is at most its peak, and a long run keeps
a bounded number of steps."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

import memprof
import memprof.session.steps as session_steps
from memprof.session.config import SessionConfig
from memprof.session.core import Session
from tests.collect.test_cuda import FakeCuda

MiB = 1 << 20
BIG = 2 * MiB  # float32 elements: 8 MiB


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    loss = model(torch.ones(1, 4)).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _tiny() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def test_a_tensor_made_after_the_loop_is_in_the_peak() -> None:
    model, opt = _tiny()
    with memprof.track() as s:
        for _ in range(40):  # past the detailed steps: the loop ends watching
            _step(model, opt)
        big = torch.ones(BIG)
        big.add_(1)
    report = s.report
    assert report is not None
    assert report.peak_bytes >= 8 * MiB, report.peak_bytes
    assert not report.steps[-1].detailed
    del big


def test_a_tensor_made_between_detailed_steps_is_in_the_peak() -> None:
    """Made in a watched step and freed a few steps later: the counter brings detail back, which
    counts it."""
    model, opt = _tiny()
    held: list[torch.Tensor] = []
    with memprof.track() as s:
        for i in range(40):
            if i == 20:
                held.append(torch.ones(BIG))
            if i == 30:
                held.clear()
            _step(model, opt)
            time.sleep(0.003)  # steps of 2 ms or more: the counter is read at every boundary
    report = s.report
    assert report is not None
    assert report.peak_bytes >= 8 * MiB, report.peak_bytes
    assert not report.steps[20].detailed
    assert max(st.peak_bytes for st in report.steps[21:30]) >= 8 * MiB


def test_watched_cpu_figures_move_with_the_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    heap = [100 * MiB]
    monkeypatch.setattr(session_steps, "heap_in_use_bytes", lambda: heap[0])
    model, opt = _tiny()
    with memprof.track(detail_steps=3) as s:
        s.schedule.decide = lambda phase: s.set_detail(s.steps.index + 1 < 3)  # type: ignore[method-assign]
        for i in range(12):
            if i >= 6:
                heap[0] += MiB
            if i < 3:  # a 16 MiB temporary in the detailed steps: the run's peak, above what follows
                torch.ones(4 * MiB).sum()
            _step(model, opt)
            time.sleep(0.003)
    report = s.report
    assert report is not None
    base = [st for st in report.steps if st.detailed][-1]
    last = report.steps[-1]
    assert not last.detailed
    assert last.end_bytes >= base.end_bytes + 5 * MiB  # six MiB more on the heap, less the noise band
    assert last.end_bytes <= last.peak_bytes <= report.peak_bytes  # never above the run's peak


def _fake_cuda_session(fake: FakeCuda) -> Session:
    return Session(SessionConfig(publish=False, advise=False), cuda_backend=fake)


def test_on_cuda_the_allocators_peak_since_its_last_look_is_read_at_the_end() -> None:
    fake = FakeCuda()
    model, opt = _tiny()
    s = _fake_cuda_session(fake)
    with s:
        for _ in range(30):
            _step(model, opt)
        fake.stats["allocated_bytes.all.peak"] = 300 * MiB  # after the loop, no boundary since
    report = s.report
    assert report is not None
    assert report.peak_bytes == 300 * MiB


def test_on_cuda_watched_steps_read_the_allocator() -> None:
    fake = FakeCuda()
    model, opt = _tiny()
    s = _fake_cuda_session(fake)
    with s:
        fake.stats["allocated_bytes.all.current"] = MiB
        for i in range(30):
            fake.stats["allocated_bytes.all.peak"] = max(fake.stats["allocated_bytes.all.peak"], (i + 2) * MiB)
            _step(model, opt)
            time.sleep(0.003)  # steps of 2 ms or more: the allocator is read at every boundary
    report = s.report
    assert report is not None
    watched = [st for st in report.steps if not st.detailed]
    assert watched and all(st.end_bytes == MiB for st in watched)
    assert watched[-1].peak_bytes == (watched[-1].index + 2) * MiB  # its own, not the last detailed step's
    assert report.peak_bytes == 31 * MiB
    assert all(st.end_bytes <= st.peak_bytes for st in report.steps)


def test_a_steps_end_is_never_above_its_peak_nor_zero_from_a_call_that_measured_nothing() -> None:
    model, opt = _tiny()
    with memprof.track(detail="full") as s:
        for _ in range(5):
            _step(model, opt)
        with torch.no_grad():
            for _ in range(3):
                model(torch.ones(64, 4))
        steps = s.steps
        last = steps.last
        assert last is not None
        peak = last.peak_bytes
        steps.set_last_end(peak + 20 * MiB)  # measured at another moment: cut to the peak
        assert steps.last is not None and steps.last.end_bytes == peak
        steps.set_last_end(0)  # nothing measured: kept
        assert steps.last.end_bytes == peak
    report = s.report
    assert report is not None
    assert all(st.end_bytes <= st.peak_bytes for st in report.steps)


def test_a_long_runs_report_keeps_a_bounded_number_of_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    from memprof.model import history

    monkeypatch.setattr(session_steps, "StepHistory", lambda: history.StepHistory(20, 20, 16, 8, 8))
    w = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.01)
    x = torch.ones(4)
    with memprof.track() as s:
        for _ in range(3_000):
            loss = (x * w).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    report = s.report
    assert report is not None
    assert report.steps_kept is not None and report.steps_kept.total == report.step_count == 3_000
    assert len(report.steps) <= 20 + 20 + 4 * 16 + 16 + 2
    idx = [st.index for st in report.steps]
    assert idx == sorted(idx) and idx[:20] == list(range(20)) and idx[-20:] == list(range(2_980, 3_000))
    assert all(st.end_bytes <= st.peak_bytes for st in report.steps)
