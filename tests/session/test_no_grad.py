"""The figure of a missing no_grad in a run: the peak with autograd on minus the peak with it off,
per call (with the line's graphs alive at once), as running the loop both ways measures it."""

from __future__ import annotations

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
