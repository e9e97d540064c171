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
    assert f.step == 3  # the first graph has outlived three boundaries without a backward
    assert "no backward freed in 3 iterations" in f.message and "`bank.append(key(x).detach())`" in f.advice and f.extra["graphs"] >= 2


def test_small_graphs_are_not_worth_a_warning() -> None:
    rec = Recorder(RetainedGraphDetector(), peak_bytes=1 << 40)  # 32 KiB is nothing at this peak
    memory_bank(rec)
    assert rec.findings == []


def chunks_consumed_later(rec: Recorder, every: int) -> None:
    """Graphs kept over ``every`` boundaries, then backpropagated together and cleared."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    pending = []
    for step in range(4 * every):
        pending.append(rec.call(model, torch.randn(128, 64)).mean())
        if step % every == every - 1:
            opt.zero_grad()
            torch.stack(pending).sum().backward()
            opt.step()
            pending.clear()
        rec.boundary()


def test_graphs_a_later_backward_consumes_are_not_retained() -> None:
    rec = Recorder(RetainedGraphDetector())
    chunks_consumed_later(rec, every=3)  # each graph outlives two boundaries, then its backward frees it
    assert rec.findings == []
    assert any(v.graph.saved_bytes for it in rec.iterations for v in it.variables if v.path == "pending")
    rec = Recorder(RetainedGraphDetector())
    chunks_consumed_later(rec, every=5)  # kept over four boundaries without a backward: reported
    assert [f.variable for f in rec.findings][:1] == ["pending"]
