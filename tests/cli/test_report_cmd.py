"""``memprof report FILE``: in a subprocess (``python -m memprof``) and in-process (``main([...])``)."""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from memprof.cli import main as cli_main
from memprof.model import FindingKind, Status
from memprof.report.json_io import load_report
from tests.conftest import ROOT
from tests.report_factory import MiB, make_report, make_snapshot


@pytest.fixture
def report_json(tmp_path: Path) -> Path:
    path = tmp_path / "report.json"
    make_report().save(str(path))
    return path


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Path:
    path = tmp_path / "snapshot.pickle"
    path.write_bytes(pickle.dumps(make_snapshot(fragmented=True, oom=True)))
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memprof", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


# ----------------------------------------------------------------------------------------- subprocess


def test_subprocess_prints_summary_of_a_report(report_json: Path) -> None:
    proc = run_cli("report", str(report_json))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("memprof: ")
    assert "train.py:42: warning: total_loss accumulates" in proc.stdout
    assert "\x1b[" not in proc.stdout  # stdout is a pipe: no colour
    assert proc.stderr == ""


def test_subprocess_converts_a_snapshot(snapshot_file: Path, tmp_path: Path) -> None:
    out_json, out_html = tmp_path / "out.json", tmp_path / "out.html"
    proc = run_cli("report", str(snapshot_file), "--json", str(out_json), "--html", str(out_html))
    assert proc.returncode == 0, proc.stderr
    assert "[fragmentation]" in proc.stdout and "OUT OF MEMORY" in proc.stdout
    report = load_report(out_json)
    assert report.status is Status.OOM and report.peak_bytes == 850 * MiB
    assert out_html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert f"wrote {out_json}" in proc.stderr


def test_subprocess_error_is_one_line_exit_2(tmp_path: Path) -> None:
    proc = run_cli("report", str(tmp_path / "missing.json"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("memprof: error: cannot read")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_subprocess_help_shows_the_docstring() -> None:
    proc = run_cli("report", "--help")
    assert proc.returncode == 0
    assert "Show a saved report or a PyTorch memory snapshot" in proc.stdout
    assert "--html PATH" in proc.stdout and "--no-color" in proc.stdout


# ----------------------------------------------------------------------------------------- in-process


def test_main_prints_summary(report_json: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["report", str(report_json)]) == 0
    out, err = capsys.readouterr()
    assert "peak      618 MiB at step 29" in out
    assert err == ""


def test_detected_by_content_not_extension(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snap = tmp_path / "looks_like.json"
    snap.write_bytes(pickle.dumps(make_snapshot()))
    rep = tmp_path / "looks_like.pickle"
    make_report().save(str(rep))
    assert cli_main.main(["report", str(snap)]) == 0
    assert "peak      850 MiB" in capsys.readouterr().out
    assert cli_main.main(["report", str(rep)]) == 0
    assert "peak      618 MiB" in capsys.readouterr().out


def test_html_and_json_outputs(report_json: Path, snapshot_file: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    html_path = tmp_path / "a" / "r.html"
    assert cli_main.main(["report", str(report_json), "--html", str(html_path)]) == 0
    doc = html_path.read_text(encoding="utf-8")
    assert "total_loss accumulates" in doc and "<svg" in doc
    json_path = tmp_path / "snap.json"
    assert cli_main.main(["report", str(snapshot_file), "--json", str(json_path)]) == 0
    data = json.loads(json_path.read_text())
    assert data["schema"] == "memprof.report/1"
    assert {f["kind"] for f in data["findings"]} == {FindingKind.OOM.value, FindingKind.FRAGMENTATION.value}
    # a report JSON can be re-written too (normalised)
    again = tmp_path / "again.json"
    assert cli_main.main(["report", str(report_json), "--json", str(again)]) == 0
    assert load_report(again) == load_report(report_json)
    capsys.readouterr()


class _Tty(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def test_colour_on_a_tty_unless_no_color(report_json: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    tty = _Tty()
    monkeypatch.setattr(sys, "stdout", tty)
    assert cli_main.main(["report", str(report_json)]) == 0
    assert "\x1b[1;33mwarning:\x1b[0m" in tty.getvalue()
    tty2 = _Tty()
    monkeypatch.setattr(sys, "stdout", tty2)
    assert cli_main.main(["report", str(report_json), "--no-color"]) == 0
    assert "\x1b[" not in tty2.getvalue() and "warning:" in tty2.getvalue()
    tty3 = _Tty()
    monkeypatch.setattr(sys, "stdout", tty3)
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli_main.main(["report", str(report_json)]) == 0
    assert "\x1b[" not in tty3.getvalue()


def test_ascii_stdout_gets_ascii_summary(report_json: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stream)
    assert cli_main.main(["report", str(report_json)]) == 0
    stream.flush()
    assert b"64 -> 192" in raw.getvalue()


@pytest.mark.parametrize("content", [b"hello, world\n", b"\x00\x01\x02binary", b""])
def test_neither_json_nor_snapshot(tmp_path: Path, content: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "junk.dat"
    path.write_bytes(content)
    assert cli_main.main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert "neither a memprof report JSON nor a PyTorch memory snapshot" in err
    assert err.count("\n") == 1


def test_broken_inputs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "notreport.json": b'{"hello": "world"}',
        "badkind.json": json.dumps({"schema": "memprof.report/1", "findings": [{"kind": "nonsense"}]}).encode(),
        "nokind.json": json.dumps({"schema": "memprof.report/1", "findings": [{"severity": "error"}]}).encode(),
        "truncated.pickle": pickle.dumps(make_snapshot())[:200],
        "list.pickle": pickle.dumps([1, 2, 3]),
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        assert cli_main.main(["report", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("memprof: error: ") and err.count("\n") == 1, (name, err)
    assert cli_main.main(["report", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_unwritable_output_is_a_one_line_error(report_json: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main.main(["report", str(report_json), "--html", str(blocker / "sub" / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memprof: error: cannot write") and err.count("\n") == 1


def test_missing_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["report"]) == 2
    assert "memprof: error:" in capsys.readouterr().err
