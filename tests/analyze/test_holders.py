"""Findings on holders below the user's frames and on variables assigned in several places: the
line that ran, the holder's path, a fix written for that code (accumulated_tensor, run in-process)."""

from __future__ import annotations

import heapq
import importlib
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from memprof.analyze import accumulated_tensor
from memprof.analyze.accumulated_tensor import AccumulatedTensorDetector
from memprof.collect.storage import StorageTracker
from memprof.model import Finding, Severity
from tests.analyze.recording import Recorder, line_of

STEPS = 6
LIBRARY = '''
class Trainer:
    """A library's trainer: it keeps the user's callbacks in a list."""

    def __init__(self, model, opt, callbacks):
        self.model, self.opt, self.callbacks = model, opt, list(callbacks)

    def train_step(self, x, y):
        y_pred = self.model(x)
        loss = (y_pred - y).pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        for cb in self.callbacks:
            cb.on_batch_end(y_pred)
'''


@pytest.fixture
def library(tmp_path: Path) -> Iterator[ModuleType]:
    """A trainer class in an installed package's file (not the user's)."""
    root = tmp_path / "site-packages"
    root.mkdir()
    (root / "fakelib_trainer.py").write_text(LIBRARY)
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("fakelib_trainer")
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("fakelib_trainer", None)


def _model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> torch.Tensor:
    opt.zero_grad()
    loss = model(torch.randn(8, 16)).pow(2).mean()
    loss.backward()
    opt.step()
    return loss


def _one(rec: Recorder) -> Finding:
    assert rec.findings, "nothing found"
    assert len({(f.file, f.line) for f in rec.findings}) == 1, rec.findings
    return rec.findings[-1]


class Recorder2:
    """Records the predictions of each batch (the user's callback, kept by the library's trainer)."""

    def __init__(self) -> None:
        self.y_preds_: list[torch.Tensor] = []

    def on_batch_end(self, y_pred: torch.Tensor) -> None:
        self.y_preds_.append(y_pred)  # planted: two levels below the loop's frame


def test_a_callback_in_a_library_trainers_list_is_named_and_found_in_its_class(library: ModuleType) -> None:
    rec = Recorder(AccumulatedTensorDetector())
    model, opt = _model()
    trainer = library.Trainer(model, opt, [Recorder2()])
    for _ in range(STEPS):
        trainer.train_step(torch.randn(8, 16), torch.randn(8, 4))
        rec.boundary()
    f = _one(rec)
    assert (f.file, f.line) == (__file__, line_of("self.y_preds_.append(y_pred)  # planted"))
    assert f.variable == "trainer.callbacks[0].y_preds_" and f.variable in f.message
    assert f.severity == Severity.WARNING and "`self.y_preds_.append(y_pred.detach())`" in f.advice


def _make_logger() -> Any:
    history = []

    def log(out: torch.Tensor) -> int:
        history.append(out)  # planted: in a closure
        return len(history)

    return log


def test_a_closure_that_keeps_outputs_is_found_in_the_closure() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    model, opt = _model()
    log = _make_logger()
    for _ in range(STEPS):
        out = model(torch.randn(8, 16))
        out.sum().backward()
        opt.step()
        log(out)
        rec.boundary()
    f = _one(rec)
    assert (f.file, f.line, f.variable) == (__file__, line_of("history.append(out)  # planted"), "history (in closure log)")
    assert "`history.append(out.detach())`" in f.advice


def _running_mean() -> Iterator[Any]:
    total, count = 0.0, 0
    while True:
        value = yield (total / count if count else 0.0)
        total = total + value  # planted: in a suspended generator
        count += 1


def test_a_generators_running_total_is_found_and_what_derives_from_it_is_not() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    model, opt = _model()
    meter = _running_mean()
    next(meter)
    mean = None
    for _ in range(STEPS):
        mean = meter.send(_step(model, opt))  # `mean` holds total / count: its history is total's
        rec.boundary()
    f = _one(rec)
    assert (f.line, f.variable) == (line_of("total = total + value  # planted"), "total (in generator meter)")
    assert "`total = total + value.item()`" in f.advice
    assert "mean" not in {g.variable for g in rec.findings}
    del mean


def _train_round(rec: Recorder, model: nn.Module, opt: torch.optim.Optimizer,
                 tasks: dict[str, list[torch.Tensor]], totals: dict[str, Any]) -> None:
    for name, batches in tasks.items():
        for x in batches:
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            opt.step()
            totals[name] += loss  # planted: nested loops over a dict's items
            rec.boundary()


def test_an_accumulation_in_nested_loops_over_dict_items_is_found_at_its_line() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    model, opt = _model()
    tasks = {t: [torch.randn(8, 16) for _ in range(3)] for t in ("a", "b")}
    totals: dict[str, Any] = {name: 0.0 for name in tasks}
    for _ in range(2):
        _train_round(rec, model, opt, tasks, totals)  # the caller's line is not the one
    f = _one(rec)
    assert (f.line, f.variable) == (line_of("totals[name] += loss  # planted"), "totals")
    assert "accumulates the autograd history" in f.message
    assert "`totals[name] += loss.item()`" in f.advice


def several_assignments(rec: Recorder, as_number: bool) -> None:
    model, opt = _model()
    loss: Any = 0.0
    for _ in range(STEPS):
        batch_loss = _step(model, opt)
        if as_number:
            loss = loss + batch_loss.item()
        else:
            loss += batch_loss  # planted: the branch that runs
        rec.boundary()


def several_assignments_item_last(rec: Recorder, as_tensor: bool) -> None:
    model, opt = _model()
    loss: Any = 0.0
    for _ in range(STEPS):
        batch_loss = _step(model, opt)
        if as_tensor:
            loss = loss + batch_loss * 2  # planted: the branch that runs
        else:
            loss += batch_loss.item() * 2
        rec.boundary()


def test_of_several_assignments_the_one_that_adds_a_graph_is_found_and_fixed() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    several_assignments(rec, as_number=False)
    f = _one(rec)
    assert (f.line, f.variable) == (line_of("loss += batch_loss  # planted"), "loss")
    assert "`loss += batch_loss.item()`" in f.advice and "loss.item()`" not in f.advice.replace("batch_loss", "")
    rec = Recorder(AccumulatedTensorDetector())
    several_assignments_item_last(rec, as_tensor=True)
    f = _one(rec)
    assert f.line == line_of("loss = loss + batch_loss * 2  # planted")  # not the later `.item()` one
    assert "`loss = loss + (batch_loss * 2).item()`" in f.advice
    rec = Recorder(AccumulatedTensorDetector())
    several_assignments(rec, as_number=True)
    assert rec.findings == []


class RunningBatchNorm(nn.Module):
    def __init__(self, n: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("running_mean", torch.zeros(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            mean = x.mean(0)
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mean  # planted
        else:
            mean = self.running_mean
        return x - mean


def test_a_custom_batch_norm_whose_running_stats_carry_the_graph_is_found() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), RunningBatchNorm(32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(STEPS):
        _step_net(net, opt)
        rec.boundary()
    f = _one(rec)
    assert (f.line, f.variable) == (line_of("self.running_mean = self.momentum * self.running_mean"), "net.1.running_mean")
    assert ".detach()`" in f.advice and "torch.no_grad()" in f.advice and "self.running_mean" in f.advice


def _step_net(net: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    net(torch.randn(8, 16)).pow(2).mean().backward()
    opt.step()


def detached_cache(rec: Recorder, bounded: bool) -> None:
    model, opt = _model()
    cache: Any = deque(maxlen=3) if bounded else {}
    for step in range(STEPS):
        _step(model, opt)
        emb = torch.randn(64, 256)
        if bounded:
            cache.append(emb.detach())
        else:
            cache[step] = emb.detach()  # planted: never trimmed
        rec.boundary()


def test_a_dict_of_detached_tensors_filled_every_step_is_a_warning_when_it_weighs() -> None:
    rec = Recorder(AccumulatedTensorDetector(), peak_bytes=1 << 20)
    detached_cache(rec, bounded=False)
    f = _one(rec)
    assert (f.line, f.variable, f.severity) == (line_of("cache[step] = emb.detach()  # planted"), "cache", Severity.WARNING)
    assert "deque(maxlen=" in f.advice
    rec = Recorder(AccumulatedTensorDetector(), peak_bytes=1 << 40)  # a drop in this ocean: a tip
    detached_cache(rec, bounded=False)
    assert {f.severity for f in rec.findings} == {Severity.INFO}


def test_a_bounded_deque_of_detached_tensors_gets_nothing() -> None:
    rec = Recorder(AccumulatedTensorDetector(), peak_bytes=1 << 20)
    detached_cache(rec, bounded=True)
    assert rec.findings == []
    assert "cache" in {v.path for v in rec.iterations[-1].variables}


def episodes(rec: Recorder, clear: bool) -> None:
    """Episodes that grow longer: each one's log-probabilities are backpropagated once and cleared."""
    model, opt = _model()
    log_probs: list[torch.Tensor] = []
    for episode in range(STEPS):
        start = len(log_probs)
        for _ in range(2 + episode):
            log_probs.append(model(torch.randn(1, 16)).log_softmax(-1)[0, 0])
        opt.zero_grad()
        torch.stack(log_probs[start:]).sum().backward()
        opt.step()
        rec.boundary()  # the optimizer's step: the list is cleared just after it
        if clear:
            del log_probs[:]


def test_a_list_a_backward_consumes_and_the_code_clears_is_no_accumulation(monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(AccumulatedTensorDetector())
    episodes(rec, clear=True)
    assert rec.findings == []
    assert [v.tensors for v in rec.iterations[-1].variables if v.path == "log_probs"] == [STEPS + 1]
    rec = Recorder(AccumulatedTensorDetector())
    episodes(rec, clear=False)
    assert rec.findings and rec.findings[-1].variable == "log_probs"
    # What tells them apart is what survives a boundary, not the list's length.
    monkeypatch.setattr(accumulated_tensor, "survived", lambda window, since: True)
    rec = Recorder(AccumulatedTensorDetector())
    episodes(rec, clear=True)
    assert rec.findings


def test_without_a_statement_the_line_is_where_the_kept_storage_was_made() -> None:
    tracker = StorageTracker()

    def site_of(t: torch.Tensor) -> tuple[str, int] | None:
        ref = tracker.ref_of(t)
        return ref.site if ref is not None else None

    rec = Recorder(AccumulatedTensorDetector(), site_of=site_of)
    model, opt = _model()
    best: list[tuple[float, int, torch.Tensor]] = []
    with tracker:
        for step in range(STEPS):
            loss = _step(model, opt)
            emb = model[0](torch.randn(256, 16)).tanh()  # planted: made here, 32 KiB (sites are kept from 16 KiB)
            heapq.heappush(best, (loss.item(), step, emb))  # no statement of the source changes `best`
            rec.boundary()
    f = _one(rec)
    assert (f.line, f.variable) == (line_of("emb = model[0](torch.randn(256, 16)).tanh()  # planted"), "best")
