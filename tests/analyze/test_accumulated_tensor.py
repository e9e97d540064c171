"""accumulated_tensor on censuses of small training loops run in-process."""

from __future__ import annotations

import collections
import dataclasses

import torch
from torch import nn

from memprof.analyze.accumulated_tensor import AccumulatedTensorDetector
from memprof.model import FindingKind, Severity
from tests.analyze.recording import Recorder, line_of

STEPS = 6


def _setup() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    return model, torch.optim.SGD(model.parameters(), lr=0.01)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer) -> torch.Tensor:
    opt.zero_grad()
    loss = model(torch.randn(16, 32)).pow(2).mean()
    loss.backward()
    opt.step()
    return loss


def sum_of_loss_items(rec: Recorder) -> None:
    model, opt = _setup()
    total_loss = 0.0
    for _ in range(STEPS):
        loss = _train_step(model, opt)
        total_loss += loss.item()
        rec.boundary()


def sum_of_loss_tensors(rec: Recorder) -> None:
    model, opt = _setup()
    total_loss: float | torch.Tensor = 0.0
    for _ in range(STEPS):
        loss = _train_step(model, opt)
        total_loss += loss  # planted: the graph of every step
        rec.boundary()


def kept_outputs(rec: Recorder, detach: bool) -> None:
    model, opt = _setup()
    all_logits = []
    for _ in range(STEPS):
        opt.zero_grad()
        logits = model(torch.randn(16, 32))
        logits.pow(2).mean().backward()
        opt.step()
        all_logits.append(logits.detach() if detach else logits)  # planted
        rec.boundary()


class Meter:
    def __init__(self) -> None:
        self.history: list[torch.Tensor] = []

    def log(self, value: torch.Tensor) -> None:
        self.history.append(value)  # planted: in the owner's class


def meter_history(rec: Recorder) -> None:
    model, opt = _setup()
    meter = Meter()
    for _ in range(STEPS):
        meter.log(_train_step(model, opt))
        rec.boundary()


def test_a_careful_loop_gets_no_finding() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    sum_of_loss_items(rec)
    assert rec.findings == []
    assert "loss" in {v.path for v in rec.iterations[-1].variables}  # the census did see the loop


def test_summing_the_loss_tensor_accumulates_its_history() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    sum_of_loss_tensors(rec)
    assert rec.findings, "no accumulation found"
    f = rec.findings[0]
    assert f.kind == FindingKind.ACCUMULATED_TENSOR and f.severity == Severity.WARNING
    assert (f.file, f.line, f.variable) == (__file__, line_of("total_loss += loss  # planted"), "total_loss")
    assert f.step == 3  # the fourth boundary: three increases in a row
    assert "autograd history" in f.message and f.extra["graph_nodes"] > 0
    assert {g.variable for g in rec.findings} == {"total_loss"}


def test_a_list_of_graph_carrying_outputs_is_a_warning() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    kept_outputs(rec, detach=False)
    f = rec.findings[-1]
    assert (f.line, f.variable, f.severity) == (line_of("all_logits.append(logits"), "all_logits", Severity.WARNING)
    assert "autograd graph" in f.message and f.extra["tensors"] == STEPS
    assert f.bytes == 16 * 4 * 4  # one step's logits, float32


def test_a_list_of_detached_outputs_is_a_tip() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    kept_outputs(rec, detach=True)
    assert rec.findings and {f.severity for f in rec.findings} == {Severity.INFO}
    assert rec.findings[-1].variable == "all_logits"


def test_an_attribute_is_found_where_its_class_changes_it() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    meter_history(rec)
    f = rec.findings[-1]
    assert (f.file, f.line, f.variable) == (__file__, line_of("self.history.append(value)"), "meter.history")


def test_three_increases_in_a_row_are_needed() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    sum_of_loss_tensors(rec)
    early = AccumulatedTensorDetector()
    for it in rec.iterations[:3]:  # two increases only
        assert early.on_iteration(it, {}) == []


def histories_in_bounded_deques(rec: Recorder) -> None:
    model, opt = _setup()
    history = {"loss": collections.deque(maxlen=50), "logits": collections.deque(maxlen=50)}
    for _ in range(STEPS):
        opt.zero_grad()
        logits = model(torch.randn(16, 32))
        loss = logits.pow(2).mean()
        loss.backward()
        opt.step()
        history["loss"].append(loss.detach())
        history["logits"].append(logits.detach())
        rec.boundary()


def test_a_dict_of_bounded_deques_does_not_grow_every_step() -> None:
    # Each deque stops at its maxlen: "grows every step" and "bound it with a deque" would be wrong.
    rec = Recorder(AccumulatedTensorDetector())
    histories_in_bounded_deques(rec)
    assert rec.findings == []


def test_moving_to_the_cpu_is_suggested_on_a_gpu_run_only() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    kept_outputs(rec, detach=True)
    on_cpu = rec.findings[-1]
    assert ".cpu()" not in on_cpu.advice and "to the CPU" not in on_cpu.advice.lower()
    assert "bound all_logits" in on_cpu.advice and "keep only the numbers you need" in on_cpu.advice
    gpu = AccumulatedTensorDetector()  # the same censuses, from a run whose allocator was CUDA's
    found = [f for it in rec.iterations for f in gpu.on_iteration(dataclasses.replace(it, cuda_allocated_peak=1), {})]
    assert found and "keep it on the CPU (`.cpu()`)" in found[-1].advice


def test_graph_carrying_outputs_get_no_cpu_advice_on_a_cpu_run() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    kept_outputs(rec, detach=False)
    assert ".cpu()" not in rec.findings[-1].advice
    gpu = AccumulatedTensorDetector()
    found = [f for it in rec.iterations for f in gpu.on_iteration(dataclasses.replace(it, cuda_allocated_peak=1), {})]
    assert found and ".detach().cpu()" in found[-1].advice
