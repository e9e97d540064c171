"""oom on a run that failed with an out-of-memory raised in the user's code."""

from __future__ import annotations

from memprof.analyze.base import RunEnd
from memprof.analyze.oom import OomDetector
from memprof.model import Finding, FindingKind, Severity, Status
from memprof.model.run import OomCapture
from tests.analyze.recording import line_of, run_data

MiB = 1 << 20


def allocate() -> None:
    raise MemoryError("out of memory")  # planted


def train_step() -> None:
    allocate()


def _failure() -> BaseException:
    try:
        train_step()
    except MemoryError as e:
        return e
    raise AssertionError("no failure")


def _capture() -> OomCapture:
    return OomCapture(
        requested_bytes=64 * MiB, live_bytes=900 * MiB, limit_bytes=1024 * MiB,
        breakdown={"parameters": 100 * MiB, "activations": 800 * MiB, "gradients": 0}, by_module={}, largest=[],
        step=3, source="memory-limit",
    )


def _finish(status: Status, exc: BaseException | None, cap: OomCapture | None) -> list[Finding]:
    return OomDetector().on_finish(RunEnd(run_data(oom=cap), status=status, exc=exc))


def test_a_run_that_ended_well_has_no_oom() -> None:
    assert _finish(Status.OK, None, None) == []
    assert _finish(Status.ERROR, _failure(), None) == []


def test_the_oom_points_at_the_innermost_user_line() -> None:
    [f] = _finish(Status.OOM, _failure(), _capture())
    assert (f.kind, f.severity) == (FindingKind.OOM, Severity.ERROR)
    assert (f.file, f.line) == (__file__, line_of('raise MemoryError("out of memory")  # planted'))
    assert (f.bytes, f.step) == (64 * MiB, 3)
    assert f.message == (
        "the run ran out of memory: requested 64.0 MiB with 900 MiB in use of 1.00 GiB at step 3: "
        "activations 800 MiB, parameters 100 MiB"  # largest first, empty categories left out
    )


def test_without_a_capture_or_a_traceback() -> None:
    [f] = _finish(Status.OOM, None, None)
    assert (f.message, f.file, f.line, f.bytes, f.step) == ("the run ran out of memory", None, None, 0, None)
