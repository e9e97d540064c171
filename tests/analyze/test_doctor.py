"""The doctor: the registry's detectors at each event of a run, their findings merged and sorted."""

from __future__ import annotations

import os
from collections.abc import Mapping

from memprof.analyze import Doctor
from memprof.analyze.accumulated_tensor import AccumulatedTensorDetector
from memprof.analyze.base import BaseDetector, RunEnd
from memprof.analyze.oom import OomDetector
from memprof.analyze.registry import DETECTORS
from memprof.model import Finding, FindingKind, Severity, Status
from memprof.model.categories import ACTIVATIONS
from memprof.model.run import ForwardRecord, IterationRecord
from tests.analyze.recording import GROWING, MiB, Recorder, Ref, iteration, run_data
from tests.analyze.test_accumulated_tensor import sum_of_loss_tensors


class Replay(BaseDetector):
    """Returns the findings it is given, one list per boundary."""

    kind = FindingKind("replayed")

    def __init__(self, *batches: list[Finding]) -> None:
        self.batches = list(batches)

    def on_iteration(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> list[Finding]:
        return self.batches.pop(0)


def _finding(bytes_: int, step: int, severity: Severity = Severity.INFO, line: int = 7, **kw: object) -> Finding:
    return Finding(Replay.kind, severity, f"{bytes_} bytes", file="train.py", line=line, bytes=bytes_, step=step,
                   **kw)  # type: ignore[arg-type]


def _observe(doctor: Doctor, steps: int) -> None:
    for i in range(steps):
        doctor.observe(iteration(i), {})


def test_the_registry_has_one_detector_per_kind() -> None:
    kinds = [d.kind for d in DETECTORS]
    assert len(kinds) == len(set(kinds))
    assert set(kinds) == {k for k in FindingKind if k.known}
    assert [type(d) for d in Doctor().detectors] == list(DETECTORS)


def test_a_finding_seen_again_keeps_its_first_step_and_takes_the_latest_figures() -> None:
    doctor = Doctor([Replay([_finding(100, 1)], [_finding(300, 2)], [_finding(200, 3)])])
    _observe(doctor, 3)
    [f] = doctor.findings
    assert (f.step, f.bytes, f.message) == (1, 300, "300 bytes")  # not lowered by the smaller one
    assert f.file == os.path.abspath("train.py")


def test_a_graver_sighting_raises_the_severity() -> None:
    doctor = Doctor([Replay([_finding(100, 1)], [_finding(50, 2, Severity.WARNING)], [_finding(10, 3)])])
    _observe(doctor, 3)
    [f] = doctor.findings
    assert (f.severity, f.bytes, f.step) == (Severity.WARNING, 50, 1)


def test_other_lines_or_kinds_are_other_findings() -> None:
    other_kind = Finding(FindingKind.LINGERING_TENSOR, Severity.INFO, "m", file="train.py", line=7, step=1)
    doctor = Doctor([Replay([_finding(1, 1), _finding(1, 1, line=8), other_kind])])
    _observe(doctor, 1)
    assert len(doctor.findings) == 3


def test_findings_are_sorted_by_severity_then_step() -> None:
    doctor = Doctor([Replay([_finding(1, 5, Severity.INFO, line=1), _finding(1, 4, Severity.WARNING, line=2),
                             _finding(1, 2, Severity.WARNING, line=3), _finding(1, 1, Severity.INFO, line=4)]),
                     OomDetector()])
    _observe(doctor, 1)
    got = doctor.finish(run_data(), status=Status.OOM)
    assert [(f.severity, f.line) for f in got] == [
        (Severity.ERROR, None), (Severity.WARNING, 3), (Severity.WARNING, 2), (Severity.INFO, 4), (Severity.INFO, 1),
    ]


def test_a_new_kind_takes_a_detector_and_nothing_else() -> None:
    class PeakDetector(BaseDetector):
        kind = FindingKind("high_peak")

        def on_finish(self, end: RunEnd) -> list[Finding]:
            return [Finding(self.kind, Severity.WARNING, "high")] if end.data.peak_bytes > MiB else []

    assert [f.kind.value for f in Doctor([PeakDetector()]).finish(run_data(peak_bytes=2 * MiB))] == ["high_peak"]


def test_a_recorded_accumulation_explains_the_growth() -> None:
    rec = Recorder(AccumulatedTensorDetector())
    sum_of_loss_tensors(rec)
    doctor = Doctor()
    doctor.tracker_refs = lambda: [Ref(8 * MiB, ACTIVATIONS, 5, ("train.py", 30))]
    for it in rec.iterations:
        doctor.observe(it, {})
    growing = [iteration(i, end_bytes=e, peak_bytes=e) for i, e in enumerate(GROWING)]
    got = doctor.finish(run_data(growing, peak_bytes=max(GROWING)))
    assert [(f.kind, f.variable) for f in got] == [(FindingKind.ACCUMULATED_TENSOR, "total_loss")]


def test_growth_alone_is_found_with_the_trackers_line() -> None:
    doctor = Doctor()
    doctor.tracker_refs = lambda: [Ref(8 * MiB, ACTIVATIONS, 5, ("train.py", 30))]
    growing = [iteration(i, end_bytes=e, peak_bytes=e) for i, e in enumerate(GROWING)]
    [f] = doctor.finish(run_data(growing, peak_bytes=max(GROWING)))
    assert (f.kind, f.file, f.line) == (FindingKind.MEMORY_GROWTH, os.path.abspath("train.py"), 30)


def test_dropped_and_pending_forwards_reach_missing_no_grad() -> None:
    doctor = Doctor()

    def rec(step: int) -> ForwardRecord:
        return ForwardRecord(module="Net", site=("eval.py", 12), step=step, phase="eval", saved_bytes=MiB)

    doctor.forward_dropped(rec(0), 0)
    assert doctor.findings == []
    doctor.forward_dropped(rec(1), 1)
    doctor.finish_forwards([rec(2), rec(2)], 2)
    [f] = doctor.finish(run_data())
    assert (f.kind, f.line, f.step, f.extra["calls"]) == (FindingKind.MISSING_NO_GRAD, 12, 1, 4)
    assert "kept alive until the end" in f.message
