"""missing_no_grad on model calls watched in-process as a run watches them."""

from __future__ import annotations

import torch
from torch import nn

from memprof.analyze.missing_no_grad import MissingNoGradDetector
from memprof.model import FindingKind, Severity
from memprof.model.run import ForwardRecord
from tests.analyze.recording import Recorder, iteration, line_of

BATCHES = 4


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))


def evaluate(rec: Recorder, no_grad: bool) -> float:
    model = _model().eval()
    val_loss = 0.0
    with torch.set_grad_enabled(not no_grad):
        for _ in range(BATCHES):
            out = rec.call(model, torch.randn(128, 64))  # planted
            val_loss += out.mean().item()
    return val_loss


def train(rec: Recorder) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(BATCHES):
        opt.zero_grad()
        rec.call(model, torch.randn(128, 64)).mean().backward()
        opt.step()
        rec.boundary()


def predictions_kept(rec: Recorder) -> list[torch.Tensor]:
    model = _model().eval()
    return [rec.call(model, torch.randn(128, 64)) for _ in range(BATCHES)]  # planted: kept to the end


def test_evaluation_under_no_grad_gets_no_finding() -> None:
    rec = Recorder(MissingNoGradDetector())
    evaluate(rec, no_grad=True)
    assert rec.finish() == []


def test_training_calls_reach_a_backward() -> None:
    rec = Recorder(MissingNoGradDetector())
    train(rec)
    assert rec.finish() == []


def test_evaluation_with_autograd_on_is_found_at_the_call() -> None:
    rec = Recorder(MissingNoGradDetector())
    evaluate(rec, no_grad=False)
    findings = rec.finish()
    assert findings, "no missing no_grad found"
    f = findings[-1]
    assert (f.kind, f.severity) == (FindingKind.MISSING_NO_GRAD, Severity.WARNING)
    assert (f.file, f.line, f.variable) == (__file__, line_of("out = rec.call(model, torch.randn(128, 64))"), "Sequential")
    assert f.extra["calls"] == BATCHES
    assert f.bytes >= 128 * 64 * 4  # tanh's saved output, per call
    assert "kept alive" not in f.message


def test_graphs_kept_to_the_end_are_found_there() -> None:
    rec = Recorder(MissingNoGradDetector())
    kept = predictions_kept(rec)
    findings = rec.finish()
    assert len(kept) == BATCHES and findings
    f = findings[-1]
    assert f.line == line_of("return [rec.call(model, torch.randn(128, 64))")
    assert "kept alive until the end of the run" in f.message and f.extra["calls"] == BATCHES


def test_one_dropped_call_is_not_enough() -> None:
    d = MissingNoGradDetector()
    rec = ForwardRecord(module="Net", site=(__file__, 1), step=0, phase="eval", saved_bytes=1 << 20)
    assert d.on_forward_dropped(rec, 0) == []
    assert d.on_forward_dropped(ForwardRecord(module="Net", site=None, step=1, phase="eval"), 1) == []  # no user line


def test_the_largest_saved_figure_of_the_module_is_reported() -> None:
    # Between sampled steps a call's saved bytes are not measured: the module's sampled figure counts.
    d = MissingNoGradDetector()
    d.on_iteration(iteration(0), {1: ForwardRecord(module="Net", site=None, step=0, phase="train", saved_bytes=5000)})
    site = (__file__, 1)
    d.on_forward_dropped(ForwardRecord(module="Net", site=site, step=1, phase="eval"), 1)
    [f] = d.on_forward_dropped(ForwardRecord(module="Net", site=site, step=2, phase="eval"), 2)
    assert (f.bytes, f.step) == (5000, 2)



def _dropped(site: tuple[str, int], step: int, **fields: object) -> ForwardRecord:
    return ForwardRecord(module="Net", site=site, step=step, phase="eval", **fields)  # type: ignore[arg-type]


def test_the_measured_saving_is_reported_not_the_saved_bytes() -> None:
    # The saved bytes count the weights and the inputs a forward saves, which exist either way: the
    # replay's difference of peaks (autograd on minus off) is the figure, per call, never a sum.
    d = MissingNoGradDetector()
    site = (__file__, 1)
    assert d.on_forward_dropped(_dropped(site, 0, saved_bytes=7 << 20), 0) == []
    [f] = d.on_forward_dropped(_dropped(site, 1, saved_bytes=7 << 20, alive=2, no_grad_saving=3 << 20), 1)
    assert f.bytes == 3 << 20 and f.extra["measured"]
    assert "lower the peak of these calls by 3.00 MiB (2 of its graphs alive at once)" in f.message
    for step in range(2, 6):  # more calls of the same line: the figure stays per call
        [g] = d.on_forward_dropped(_dropped(site, step, saved_bytes=7 << 20, alive=2, no_grad_saving=3 << 20), step)
    assert g is f and f.bytes == 3 << 20 and f.extra["calls"] == 6


def test_a_measured_saving_replaces_an_earlier_estimate_through_the_doctor() -> None:
    from memprof.analyze.doctor import Doctor

    doctor = Doctor([MissingNoGradDetector()])
    site = (__file__, 1)
    for step in range(2):  # not measured yet: the saved bytes stand in
        doctor.forward_dropped(_dropped(site, step, saved_bytes=7 << 20), step)
    assert [f.bytes for f in doctor.findings] == [7 << 20] and "up to 7.00 MiB" in doctor.findings[0].message
    doctor.forward_dropped(_dropped(site, 2, saved_bytes=7 << 20, no_grad_saving=1 << 20), 2)
    [f] = doctor.findings
    assert f.bytes == 1 << 20 and "lower the peak of these calls by 1.00 MiB" in f.message
