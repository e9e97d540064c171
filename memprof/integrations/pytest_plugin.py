"""memprof in a test suite: memory limits and finding checks as pytest markers.

- ``@pytest.mark.limit_memory("512MiB")`` fails a test whose peak passes the limit: the CUDA
  allocator's peak where the test used CUDA, else the peak of the tensors memprof tracked. The
  test runs under memprof's memory limit (``memprof run --memory-limit``), so it stops at the
  allocation that passes the limit, and the failure shows what held memory at that moment: the
  breakdown, the request that did not fit, and the largest tensors with their lines.
- ``@pytest.mark.no_memory_findings`` fails a test on any memprof warning (or error) finding.
- ``pytest --memprof`` profiles every test and prints the tests with the largest peaks.

Loaded by pytest through the ``pytest11`` entry point; torch and memprof's session are imported
only when a test is profiled.

Known limitations:
- Only the test's call phase is profiled: memory that fixtures allocate in their setup counts only
  where the test's body still holds it at its peak.
- Tests that run in other processes (pytest-xdist workers) are profiled there, and ``--memprof``'s
  table then lists each worker's tests separately.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from memprof.units import fmt_bytes, parse_size

if TYPE_CHECKING:
    from memprof.model import Report

_REPORTS = pytest.StashKey[list[tuple[str, int]]]()
TOP_TESTS = 10
LARGEST_SHOWN = 5


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("memprof", "GPU memory profiling (memprof)")
    group.addoption("--memprof", action="store_true", default=False,
                    help="profile every test with memprof and print the tests with the largest peaks")
    group.addoption("--memprof-top", type=int, default=TOP_TESTS, metavar="N",
                    help=f"how many tests --memprof lists (default {TOP_TESTS})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "limit_memory(limit): fail the test when its memory peak passes the "
                                       "limit (\"512MiB\", \"2GiB\" or bytes); memprof measures it")
    config.addinivalue_line("markers", "no_memory_findings: fail the test on any memprof warning "
                                       "(an accumulated graph, a retained graph, evaluation without no_grad...)")
    config.stash[_REPORTS] = []


def _limit(item: pytest.Item) -> int | None:
    marker = item.get_closest_marker("limit_memory")
    if marker is None:
        return None
    value = marker.args[0] if marker.args else marker.kwargs.get("limit")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        try:
            return parse_size(value)
        except Exception as e:
            raise pytest.UsageError(f"{item.nodeid}: limit_memory({value!r}): {e}") from None
    raise pytest.UsageError(f"{item.nodeid}: limit_memory needs a size such as \"512MiB\", got {value!r}")


def peak_of(report: Report) -> int:
    """The figure a limit is checked against: CUDA's allocated peak where the test used CUDA."""
    cuda = report.cuda
    if cuda is not None and cuda.allocated_peak_bytes:
        return int(cuda.allocated_peak_bytes)
    return int(report.peak_bytes)


def limit_message(report: Report, limit: int) -> str:
    """Why a test failed its limit: what it asked for, what held memory, the largest tensors."""
    oom = report.oom
    if oom is not None and oom.live_bytes is not None:
        asked = oom.requested_bytes or 0
        at = next((f for f in report.findings if f.kind.value == "oom" and f.file and f.line), None)
        where = f" at {at.file}:{at.line}" if at is not None else ""
        lines = [f"the test was limited to {fmt_bytes(limit)}: with {fmt_bytes(oom.live_bytes)} held, it asked for "
                 f"{fmt_bytes(asked)} more{where}", "what held memory at that moment:"]
        breakdown = oom.breakdown or {}
    else:
        peak = peak_of(report)
        lines = [f"the test was limited to {fmt_bytes(limit)} but its memory peak was {fmt_bytes(peak)} "
                 f"(+{fmt_bytes(peak - limit)})", "breakdown at the peak:"]
        breakdown = report.breakdown_at_peak.as_dict()
    for name, value in breakdown.items():
        if value:
            lines.append(f"  {name.replace('_', ' '):<16} {fmt_bytes(value):>10}")
    largest = sorted(report.largest_tensors, key=lambda t: -t.bytes)[:LARGEST_SHOWN]
    if largest:
        lines.append("largest tensors:")
        for t in largest:
            shape = "x".join(str(d) for d in t.shape) if t.shape else "?"
            where = f" at {t.file}:{t.line}" if t.file and t.line else ""
            what = f" {t.category.replace('_', ' ')}" if t.category else ""
            lines.append(f"  {fmt_bytes(t.bytes):>10} {t.dtype or ''}[{shape}]{what}{where}")
    return "\n".join(lines)


def findings_message(report: Report) -> str:
    from memprof.report.format import sorted_findings

    found = [f for f in sorted_findings(report.findings) if f.severity.is_diagnosis]
    lines = [f"memprof found {len(found)} memory problem{'s' if len(found) != 1 else ''}:"]
    for f in found:
        where = f"{f.file}:{f.line}: " if f.file and f.line else ""
        lines.append(f"  {where}{f.severity.value}: {f.message} [{f.kind.value}]")
        if f.advice:
            lines.append(f"    fix: {f.advice}")
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    limit = _limit(item)
    check_findings = item.get_closest_marker("no_memory_findings") is not None
    every = bool(item.config.getoption("memprof"))
    if limit is None and not check_findings and not every:
        return (yield)
    from memprof.api import track

    stopped: BaseException | None = None
    result: Any = None
    session = None
    try:
        with track(name=str(item.path), memory_limit=limit) as session:
            result = yield
    except BaseException as e:  # the limit's out-of-memory is told below, with its post-mortem
        stopped = e
    if session is None:  # memprof could not start: the test ran (or not) as it would without it
        raise stopped if stopped is not None else RuntimeError("memprof did not start")
    report = session.report
    del session  # it holds the run's last exception: the test's frames and tensors
    over = limit is not None and report is not None and (report.oom is not None or peak_of(report) > limit)
    if stopped is not None:
        if not (over and _is_oom(stopped)):
            raise stopped
        stopped.__traceback__ = None  # told as the limit's failure: the test's frames are let go
        stopped = None
    if report is None:  # memprof's own failure: never the test's
        return result
    if every:
        item.config.stash[_REPORTS].append((item.nodeid, peak_of(report)))
    message = None
    if over and limit is not None:
        message = limit_message(report, limit)
    elif check_findings and report.diagnoses:
        message = findings_message(report)
    if message is not None:
        pytest.fail(message, pytrace=False)
    return result


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    reports = config.stash.get(_REPORTS, [])
    if not config.getoption("memprof") or not reports:
        return
    top = sorted(reports, key=lambda r: -r[1])[: max(config.getoption("memprof_top"), 1)]
    terminalreporter.write_sep("=", f"memprof: top {len(top)} of {len(reports)} tests by memory peak")
    for nodeid, peak in top:
        terminalreporter.write_line(f"{fmt_bytes(peak):>10}  {nodeid}")
