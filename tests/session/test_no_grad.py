"""The figure of a missing no_grad in a run: the peak with autograd on minus the peak with it off,
per call (with the line's graphs alive at once), as running the loop both ways measures it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import memprof
from tests.collect.test_no_grad_probe import _Live


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 2)).eval()


def evaluate(model: nn.Module, batches: list[torch.Tensor], grad: bool) -> int:
    correct = 0
    with torch.set_grad_enabled(grad):
        for x in batches:
            logits = model(x)  # planted: the last call's graph lives while the next runs
            correct += int((logits.argmax(1) == 0).sum())
    return correct


def test_the_finding_says_what_no_grad_saves_at_the_peak() -> None:
    model = _model()
    batches = [torch.randn(256, 256) for _ in range(5)]
    peaks = []
    for grad in (True, False):
        with _Live() as live:
            evaluate(model, batches, grad)
        peaks.append(live.peak)
    truth = peaks[0] - peaks[1]
    with memprof.track() as s:
        evaluate(model, batches, True)
    assert s.report is not None
    [f] = [f for f in s.report.findings if f.kind.value == "missing_no_grad"]
    assert abs(f.bytes - truth) <= 0.2 * truth, (f.bytes, truth)
    assert "2 of its graphs alive at once" in f.message
    # the saved bytes (weights and inputs included) would say more: 7 MiB here, for 3 MiB
    assert f.bytes < 4 << 20


def test_graphs_kept_by_an_accumulation_add_up() -> None:
    model = _model()
    batches = [torch.randn(128, 256) for _ in range(6)]

    def total_logits(grad: bool) -> torch.Tensor:
        total = torch.zeros(())
        with torch.set_grad_enabled(grad):
            for x in batches:
                total = total + model(x).sum()  # planted: every graph kept
        return total

    peaks = []
    for grad in (True, False):
        with _Live() as live:
            total_logits(grad)
        peaks.append(live.peak)
    truth = peaks[0] - peaks[1]
    with memprof.track() as s:
        total_logits(True)
    assert s.report is not None
    found = [f for f in s.report.findings if f.kind.value == "missing_no_grad"]
    assert found and abs(found[0].bytes - truth) <= 0.2 * truth, (found[0].bytes, truth)


def test_a_calls_saved_bytes_are_its_own_not_the_steps_running_sum() -> None:
    from memprof.session.no_grad import NoGradProbe

    probe = NoGradProbe(None)  # type: ignore[arg-type]  # per_call needs no session
    assert [probe.per_call(1, 0, total) for total in (100, 200, 300)] == [100, 100, 100]  # one step, three calls
    assert probe.per_call(1, 1, 120) == 120  # the next step's count starts again
    assert probe.per_call(2, 1, 50) == 50  # another model


def test_the_replays_run_off_the_users_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake-tensor work leaves torch's per-thread functorch state behind, copied at every backward
    after it (memprof.collect.aside): neither the advisor's replay nor the no_grad probe runs on
    the thread that trains."""
    import threading

    from memprof.session import assemble, no_grad

    seen: list[str] = []
    for module, name in ((assemble, "make_replays"), (no_grad, "no_grad_saving")):
        original = getattr(module, name)

        def spy(*args: object, _original=original, _name=name, **kwargs: object) -> object:
            seen.append(f"{_name}:{threading.current_thread() is threading.main_thread()}")
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    model = _model().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [torch.randn(64, 256) for _ in range(4)]
    with memprof.track() as s:
        for x in batches:
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
        evaluate(model.eval(), batches, True)
    assert s.report is not None
    assert "make_replays:False" in seen and "no_grad_saving:False" in seen, seen
    assert not any(item.endswith(":True") for item in seen), seen
    assert any(f.kind.value == "missing_no_grad" for f in s.report.findings)
