"""Where iterations begin and end: optimizer steps, and the repeated calls of an evaluation loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import memprof


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))


@pytest.mark.parametrize("detail", ["auto", "full"])
def test_each_validation_call_is_one_eval_iteration_in_watch_and_in_detail(detail: str) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with memprof.track(detail=detail) as s:
        for _epoch in range(2):
            for _ in range(30):  # past the 10 detailed steps of the default mode: watched
                loss = model(torch.randn(16, 32)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                for _ in range(5):
                    model(torch.randn(8, 32))
    report = s.report
    assert report is not None
    phases = [(st.phase, st.batch_size) for st in report.steps]
    assert phases == ([("train", 16)] * 30 + [("eval", 8)] * 5) * 2


def test_a_no_grad_call_inside_a_training_step_is_not_an_evaluation() -> None:
    """Pseudo-labels from the model itself, and a target network: part of each training step."""
    model, target = _model(), _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with memprof.track() as s:
        for _ in range(24):
            x = torch.randn(16, 32)
            with torch.no_grad():
                pseudo = model(x).argmax(1)
                goal = target(x)
            out = model(x + 0.1)
            loss = nn.functional.cross_entropy(out, pseudo) + (out - goal).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    report = s.report
    assert report is not None
    assert [st.phase for st in report.steps] == ["train"] * 24


def test_a_watched_steps_record_stays_small() -> None:
    """A run keeps one record per step (a million steps is a million records): no per-record
    dict of attributes, no empty containers made for what only detailed steps fill."""
    import tracemalloc

    from memprof.model.run import IterationRecord

    tracemalloc.start()
    try:
        recs = [IterationRecord(index=1000 + i, phase="train", detailed=False, peak_bytes=10**6, end_bytes=10**5,
                                batch_size=16, seconds=i * 1e-3) for i in range(10_000)]
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size / len(recs) < 250  # 168 bytes on CPython 3.11; 456 with a __dict__ and four empty containers
    assert not hasattr(recs[0], "__dict__") and recs[0].variables == () and recs[0].frontier == ()
