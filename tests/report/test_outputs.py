"""The output registry: each reporter writes its file; the end of a run writes, warns and announces
as ``memprof run`` always has; a conversion fails in one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from memprof.errors import MemprofError
from memprof.model import Report
from memprof.report import outputs
from memprof.report.json_io import load_report
from memprof.report.outputs import REPORTERS, SUMMARY, Option, write_files, write_outputs
from tests.report_factory import make_report


class Broken:
    """A best-effort reporter that always fails."""

    name: ClassVar[str] = "broken"
    label: ClassVar[str] = "broken output"
    option: ClassVar[Option] = Option("--broken", "never works")
    best_effort: ClassVar[bool] = True

    def write(self, report: Report, path: str) -> None:
        raise RuntimeError("nope")


@pytest.fixture
def broken() -> Iterator[Broken]:
    """``Broken`` in the registry, as its one line there would put it."""
    reporter = Broken()
    REPORTERS.append(reporter)
    yield reporter
    REPORTERS.remove(reporter)


def test_registry_names_options_and_labels_are_unique() -> None:
    for attr in ("name", "label"):
        values = [getattr(r, attr) for r in REPORTERS]
        assert len(values) == len(set(values)), attr
    flags = [r.option.flag for r in REPORTERS]
    assert len(flags) == len(set(flags)) and all(f == f"--{r.name}" for f, r in zip(flags, REPORTERS, strict=True))
    assert SUMMARY.name not in {r.name for r in REPORTERS}


@pytest.mark.parametrize("reporter", REPORTERS, ids=lambda r: r.name)
def test_each_reporter_writes_its_file(reporter: outputs.Reporter, tmp_path: Path) -> None:
    if getattr(reporter, "requires", None):  # an optional dependency (tensorboard): tested where installed
        pytest.importorskip(reporter.requires)  # type: ignore[attr-defined]
    path = tmp_path / "sub" / f"out.{reporter.name}"
    reporter.write(make_report(), str(path))
    assert (any(p.stat().st_size > 0 for p in path.iterdir()) if path.is_dir() else path.stat().st_size > 0)


def test_json_and_html_contents(tmp_path: Path) -> None:
    report = make_report()
    write_files(report, {"json": str(tmp_path / "r.json"), "html": str(tmp_path / "r.html")})
    assert json.loads((tmp_path / "r.json").read_text())["schema"] == "memprof.report/1"
    assert load_report(tmp_path / "r.json").peak_bytes == report.peak_bytes
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_end_of_run_writes_then_summarises_then_announces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    j, h = tmp_path / "r.json", tmp_path / "r.html"
    write_outputs(make_report(), {"json": str(j), "html": str(h)}, summary=True)
    err = capsys.readouterr().err
    assert j.exists() and h.exists()
    assert err.startswith("memprof: ") and "total_loss accumulates" in err
    assert err.endswith(f"\nmemprof: report written to {j}\nmemprof: HTML report written to {h}\n")


def test_end_of_run_quiet_and_nothing_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_outputs(make_report(), {"json": str(tmp_path / "r.json"), "html": None}, summary=False)
    write_outputs(make_report(), {}, summary=False)
    assert (tmp_path / "r.json").exists() and capsys.readouterr().err == ""


def test_a_best_effort_failure_is_a_warning_even_when_quiet(broken: Broken, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    j = tmp_path / "r.json"
    write_outputs(make_report(), {"broken": str(tmp_path / "x"), "json": str(j)}, summary=False)
    assert j.exists()
    assert capsys.readouterr().err == "memprof: warning: could not write the broken output: nope\n"
    write_outputs(make_report(), {"broken": str(tmp_path / "x")}, summary=True)
    assert "broken output written" not in capsys.readouterr().err  # only what was written is announced


def test_the_report_file_failing_is_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError):
        write_outputs(make_report(), {"json": str(blocker / "r.json")}, summary=False)


def test_a_summary_that_fails_still_gives_the_peak(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def fail(*args: object, **kwargs: object) -> str:
        raise ValueError("bad")

    monkeypatch.setattr(outputs, "render_summary", fail)
    report = make_report()
    write_outputs(report, {}, summary=True)
    assert capsys.readouterr().err == f"memprof: peak {report.peak_bytes} bytes (ValueError('bad') while writing the summary)\n"


def test_a_conversion_that_cannot_write_is_one_memprof_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MemprofError, match="^cannot write "):
        write_files(make_report(), {"html": str(blocker / "r.html")})
    assert write_files(make_report(), {"json": None, "html": str(tmp_path / "r.html")}) == [str(tmp_path / "r.html")]
