"""lingering_tensor on the candidates a run records at each iteration's peak.

The candidates are built as the session resolves them: the tracker's old storages alive at the
peak, named by the variable of the user's frame that refers to them (here :func:`predict`'s).
"""

from __future__ import annotations

import torch
from torch import nn

from memprof.analyze.lingering_tensor import LingeringTensorDetector
from memprof.model import Finding, FindingKind, Severity
from memprof.model.run import LingeringCandidate
from tests.analyze.recording import iteration, line_of

PEAK = 1 << 20
LOGITS = 256 << 10  # a quarter of the peak


def predict(model: nn.Module, batches: list[torch.Tensor]) -> None:
    last_logits = None
    for x in batches:
        h = model(x)  # the peak, with last step's logits alive
        h.sum().item() if last_logits is None else (h - last_logits).abs().max().item()
        last_logits = h.detach()  # planted


def _candidate(step: int, nbytes: int = LOGITS, saving: int = LOGITS, freed: bool = True) -> LingeringCandidate:
    code = predict.__code__
    return LingeringCandidate(
        key=1000 + step, nbytes=nbytes, created_step=step - 1, seq=step, path="last_logits", file=code.co_filename,
        function=code.co_name, first_line=code.co_firstlineno, line=line_of("h = model(x)  # the peak"),
        freed_before_end=freed, saving=saving, peak=PEAK,
    )


def _run(phase: str = "train", saving: int = LOGITS, freed: bool = True) -> list[Finding]:
    d = LingeringTensorDetector()
    out = []
    for i in range(4):
        cands = [_candidate(i, saving=saving, freed=freed)] if i else []  # the first iteration has no earlier one
        out += d.on_iteration(iteration(i, phase, peak_bytes=PEAK, lingering=cands), {})
    return out


def test_a_variable_lingering_at_two_peaks_is_found_where_it_is_rebound() -> None:
    findings = _run()
    assert [f.step for f in findings] == [2, 3]
    f = findings[0]
    assert (f.kind, f.severity) == (FindingKind.LINGERING_TENSOR, Severity.WARNING)
    assert (f.file, f.line, f.variable) == (__file__, line_of("last_logits = h.detach()  # planted"), "last_logits")
    assert f.bytes == LOGITS and f.extra["share_of_peak"] == 0.25
    assert "del last_logits" in f.advice


def test_in_evaluation_it_is_a_tip() -> None:
    assert {f.severity for f in _run("eval")} == {Severity.INFO}


def test_below_five_percent_of_the_peak_it_is_not_worth_it() -> None:
    assert _run(saving=PEAK // 25) == []
    assert _run(saving=PEAK // 19) != []


def test_a_storage_kept_to_the_iteration_end_does_not_linger() -> None:
    assert _run(freed=False) == []  # still needed at the end: not a tensor to drop earlier


def test_unnamed_storages_are_not_reported() -> None:
    d = LingeringTensorDetector()
    for i in range(4):
        c = _candidate(i)
        c.path = None
        assert d.on_iteration(iteration(i, lingering=[c]), {}) == []


def test_several_storages_of_one_variable_add_up() -> None:
    d = LingeringTensorDetector()
    small = PEAK // 30  # each below the share, together above it
    out = []
    for i in range(3):
        out += d.on_iteration(iteration(i, lingering=[_candidate(i, small, small), _candidate(i, small, small)]), {})
    assert [(f.step, f.bytes) for f in out] == [(1, 2 * small), (2, 2 * small)]


def test_moving_it_to_the_cpu_is_suggested_on_a_gpu_run_only() -> None:
    assert all(".cpu()" not in f.advice for f in _run())  # a CPU run: `.cpu()` frees nothing
    d = LingeringTensorDetector()
    found = [f for i in range(4) for f in d.on_iteration(
        iteration(i, "train", peak_bytes=PEAK, lingering=[_candidate(i)] if i else [], cuda_allocated_peak=PEAK), {})]
    assert found and "a slice, `.cpu()`, a number" in found[0].advice
