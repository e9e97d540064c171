"""`memprof run` as a user runs it: a subprocess, compared with plain python.

The fast tier keeps one run per contract (stdout and argv, -m, an exception, an exit status, a
signal, the usage errors); the variants of the same paths are marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_memprof, run_python

SCRIPT = ROOT / "tests" / "scripts" / "tiny_train.py"
SCRIPTS = ROOT / "tests" / "scripts"


def test_stdout_is_byte_identical_and_argv_with_spaces_arrives_intact(tmp_path: Path) -> None:
    args = ["--steps", "3", "--echo", "two words", "a'quote", "--x=1"]
    plain = run_python(str(SCRIPT), *args, cwd=tmp_path)
    prof = run_memprof("run", "--json", str(tmp_path / "r.json"), str(SCRIPT), *args, cwd=tmp_path)
    assert prof.returncode == plain.returncode == 0, prof.stderr.decode()
    assert prof.stdout == plain.stdout
    assert b"two words" in prof.stdout and b"path0 is script dir: True" in prof.stdout and b"name: __main__" in prof.stdout
    assert prof.stderr.startswith(b"to stderr\n")  # the script's own stderr first, memprof's summary after
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["schema"] == "memprof.report/1"
    assert report["argv"] == args
    assert report["status"] == "ok" and report["exit_code"] == 0
    assert len(report["steps"]) == 3
    assert sum(report["breakdown_at_peak"].values()) == report["peak_bytes"] > 0
    assert report["modules"] and report["modules"][0]["name"] == "model"


@pytest.mark.slow
def test_a_script_given_by_a_relative_path_sees_what_python_shows_it(tmp_path: Path) -> None:
    """``__file__`` absolute, ``sys.argv[0]`` as typed, python's loader; warnings name the same file."""
    (tmp_path / "where.py").write_text(
        "import sys, warnings\n"
        "print(__file__, sys.argv[0], __package__, __spec__, type(__loader__).__name__)\n"
        "print(sys.modules['__main__'].__file__ == __file__)\n"
        "warnings.warn('careful')\n"
    )
    plain = run_python("where.py", cwd=tmp_path)
    prof = run_memprof("run", "-q", "where.py", cwd=tmp_path)
    assert prof.returncode == plain.returncode == 0, prof.stderr.decode()
    assert prof.stdout == plain.stdout
    assert prof.stdout.startswith(str(tmp_path / "where.py").encode() + b" where.py None None SourceFileLoader")
    warning = plain.stderr.splitlines()[0]
    assert warning.startswith(str(tmp_path / "where.py").encode()) and warning in prof.stderr.splitlines()


@pytest.mark.parametrize("code", [pytest.param(0, marks=pytest.mark.slow), 3, pytest.param(255, marks=pytest.mark.slow)])
def test_sys_exit_code_passes_through(tmp_path: Path, code: int) -> None:
    out = tmp_path / "r.json"
    prof = run_memprof("run", "-q", "--json", str(out), str(SCRIPT), "--exit", str(code), cwd=tmp_path)
    assert prof.returncode == code
    report = json.loads(out.read_text())
    assert report["exit_code"] == code
    assert report["status"] == ("ok" if code == 0 else "error")


def test_uncaught_exception_exits_1_with_a_plain_traceback_and_a_report(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    prof = run_memprof("run", "-q", "--json", str(out), str(SCRIPT), "--raise-error", cwd=tmp_path)
    assert prof.returncode == 1
    err = prof.stderr.decode()
    assert "ValueError: boom" in err and "Traceback" in err
    assert "memprof/runner.py" not in err and "runpy.py" not in err
    report = json.loads(out.read_text())
    assert report["status"] == "error" and "boom" in report["error"]


def test_dash_m_runs_a_module_like_python(tmp_path: Path) -> None:
    plain = subprocess.run([sys.executable, "-m", "tinypkg.train", "--flag", "v"], cwd=SCRIPTS, capture_output=True)
    prof = run_memprof("run", "-q", "--json", str(tmp_path / "r.json"), "-m", "tinypkg.train", "--flag", "v", cwd=SCRIPTS)
    assert prof.returncode == plain.returncode == 0, prof.stderr.decode()
    assert prof.stdout == plain.stdout
    assert b"module argv: ['--flag', 'v'] name: __main__" in prof.stdout
    assert json.loads((tmp_path / "r.json").read_text())["script"] == "-m tinypkg.train"


@pytest.mark.parametrize(
    "args, needle",
    [
        (["run", "does_not_exist.py"], "does_not_exist.py"),
        (["run", "--budget", "lots", "x.py"], "invalid size"),
        (["run", "--no-such-option", "x.py"], "unrecognized"),
        (["run"], ""),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    prof = run_memprof(*args, cwd=tmp_path)
    assert prof.returncode == 2
    err = prof.stderr.decode()
    if needle:
        assert needle in err
        assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def _start_sleeping_run(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A profiled run that sleeps after its steps; returns once the script is in its sleep."""
    out, pidfile = tmp_path / "r.json", tmp_path / "pid"
    env = dict(os.environ, MEMPROF_LIVE_DIR=str(tmp_path / "live"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "memprof", "run", "-q", "--json", str(out), str(SCRIPT), "--sleep", "30",
         "--pidfile", str(pidfile)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # Ctrl+C as a terminal delivers it, also where the tests run with SIGINT ignored (a
        # background job of a shell without job control passes SIG_IGN on to its children).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert pidfile.exists()
    return proc, out


def test_sigterm_still_writes_the_report(tmp_path: Path) -> None:
    proc, out = _start_sleeping_run(tmp_path)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # dies of SIGTERM, as python would
    report = json.loads(out.read_text())
    assert report["status"] == "interrupted" and len(report["steps"]) == 4


@pytest.mark.slow  # the same path as SIGTERM's
def test_sigint_still_writes_the_report(tmp_path: Path) -> None:
    proc, out = _start_sleeping_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT
    assert b"KeyboardInterrupt" in err
    assert json.loads(out.read_text())["status"] == "interrupted"
