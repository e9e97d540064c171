"""retained_graph on censuses of small loops run in-process, model calls watched as a run does."""

from __future__ import annotations

import torch
from torch import nn

from memprof.analyze.retained_graph import RetainedGraphDetector
from memprof.model import FindingKind, Severity
from tests.analyze.recording import Recorder, line_of

STEPS = 5


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))  # tanh saves its output: 32 KiB


def kept_losses(rec: Recorder, retain: bool) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = rec.call(model, torch.randn(128, 64)).mean()
        loss.backward(retain_graph=retain)  # planted
        opt.step()
        losses.append(loss)
        rec.boundary()


def memory_bank(rec: Recorder) -> None:
    model, key = _model(), _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    bank = []
    for _ in range(STEPS):
        x = torch.randn(128, 64)
        opt.zero_grad()
        rec.call(model, x).mean().backward()
        opt.step()
        bank.append(key(x))  # planted: a graph no backward reaches
        rec.boundary()


def test_losses_kept_after_a_plain_backward_hold_no_saved_tensors() -> None:
    rec = Recorder(RetainedGraphDetector())
    kept_losses(rec, retain=False)
    assert rec.findings == []
    assert "losses" in {v.path for v in rec.iterations[-1].variables}


def test_retain_graph_points_at_the_backward() -> None:
    rec = Recorder(RetainedGraphDetector())
    kept_losses(rec, retain=True)
    assert rec.findings, "no retained graph found"
    f = rec.findings[0]
    assert (f.kind, f.severity) == (FindingKind.RETAINED_GRAPH, Severity.WARNING)
    assert (f.file, f.line) == (__file__, line_of("loss.backward(retain_graph=retain)"))
    assert f.variable in ("losses", "loss") and "retain_graph=True" in f.message
    assert f.step == 1  # seen twice: at the first two boundaries
    assert f.bytes >= 128 * 64 * 4


def test_a_graph_held_past_its_boundary_points_at_the_variable() -> None:
    rec = Recorder(RetainedGraphDetector())
    memory_bank(rec)
    assert rec.findings, "no retained graph found"
    f = rec.findings[0]
    assert (f.file, f.line, f.variable) == (__file__, line_of("bank.append(key(x))"), "bank")
    assert f.step == 2  # first old at step 1, reported the second time
    assert "no backward will free" in f.message and f.extra["graphs"] >= 2


def test_small_graphs_are_not_worth_a_warning() -> None:
    rec = Recorder(RetainedGraphDetector(), peak_bytes=1 << 40)  # 32 KiB is nothing at this peak
    memory_bank(rec)
    assert rec.findings == []
