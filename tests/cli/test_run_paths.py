"""`memprof run`'s paths, its errors before the script starts, its sizes, its help and its signals,
each as python (or a user) would have them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from memprof.cli import main as cli_main
from memprof.errors import MemprofError
from memprof.runner import Target, check_target
from memprof.units import parse_size
from tests.conftest import ROOT, run_memprof, run_python

SCRIPT = ROOT / "tests" / "scripts" / "tiny_train.py"

CHDIR = textwrap.dedent("""
    import os
    os.makedirs("elsewhere", exist_ok=True)
    os.chdir("elsewhere")
    print("now in", os.path.basename(os.getcwd()))
""")


def test_output_paths_resolve_against_where_memprof_started(tmp_path: Path) -> None:
    (tmp_path / "moves.py").write_text(CHDIR)
    prof = run_memprof("run", "--json", "r.json", "--html", "r.html", "moves.py", cwd=tmp_path)
    assert prof.returncode == 0, prof.stderr.decode()
    assert (tmp_path / "r.json").is_file() and (tmp_path / "r.html").is_file()
    assert not (tmp_path / "elsewhere" / "r.json").exists() and not (tmp_path / "elsewhere" / "r.html").exists()
    err = prof.stderr.decode()
    assert f"report written to {tmp_path / 'r.json'}\n" in err
    assert f"HTML report written to {tmp_path / 'r.html'}\n" in err
    assert err.startswith("memprof: moves.py ")  # the script named as typed, not from its new folder


@pytest.mark.parametrize("name", ["missing.py", "a folder/missing.py"])
def test_a_missing_script_fails_as_python_does(tmp_path: Path, name: str) -> None:
    plain = run_python(name, cwd=tmp_path)
    prof = run_memprof("run", "--json", "r.json", name, cwd=tmp_path)
    assert prof.returncode == plain.returncode == 2
    err = prof.stderr.decode()
    assert len(err.strip().splitlines()) == 1, err
    # python's own line, after its program name
    assert err.strip().endswith(plain.stderr.decode().strip().split(": ", 1)[1])
    assert "[Errno 2] No such file or directory" in err and "peak" not in err
    assert not (tmp_path / "r.json").exists()


def test_an_unreadable_script_fails_as_python_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "secret.py"
    script.write_text("print('hi')\n")

    def denied(path: str, mode: str = "r") -> None:
        raise PermissionError(13, "Permission denied", path)

    import memprof.runner

    monkeypatch.setattr(memprof.runner, "open", denied, raising=False)  # root reads a chmod 000 file
    with pytest.raises(MemprofError) as info:
        check_target(Target(path=str(script)))
    assert info.value.exit_code == 2
    assert info.value.message == f"can't open file '{script}': [Errno 13] Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file")
def test_an_unreadable_script_end_to_end(tmp_path: Path) -> None:
    script = tmp_path / "secret.py"
    script.write_text("print('hi')\n")
    script.chmod(0)
    plain = run_python(str(script), cwd=tmp_path)
    prof = run_memprof("run", "--json", "r.json", str(script), cwd=tmp_path)
    assert prof.returncode == plain.returncode == 2
    assert prof.stderr.decode().count("\n") == 1 and "[Errno 13] Permission denied" in prof.stderr.decode()
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("module", ["no_such_module_xyz", "json", "no_such_pkg_xyz.train"])
def test_dash_m_of_what_cannot_run_fails_as_python_does(tmp_path: Path, module: str) -> None:
    plain = subprocess.run([sys.executable, "-m", module], cwd=tmp_path, capture_output=True, stdin=subprocess.DEVNULL)
    prof = run_memprof("run", "--json", "r.json", "-m", module, cwd=tmp_path)
    assert prof.returncode == plain.returncode == 1
    err = prof.stderr.decode()
    assert len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith(plain.stderr.decode().strip().split(": ", 1)[1])
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("args, needle", [
    (["--budget", "5"], "--budget: '5' has no unit; write 5GiB, 512MiB, 800MB"),
    (["--budget=5"], "--budget: '5' has no unit"),
    (["--memory-limit", "1024"], "--memory-limit: '1024' has no unit; write 1024GiB"),
    (["--budget", "-5GiB"], "--budget: '-5GiB' is negative"),
    (["--budget=-5GiB"], "--budget: '-5GiB' is negative"),
    (["--memory-limit", "-1MiB"], "--memory-limit: '-1MiB' is negative"),
    (["--memory-limit", "0GiB"], "--memory-limit: invalid size '0GiB': must be at least 1 byte"),
    (["--budget", "lots"], "--budget: invalid size 'lots'"),
])
def test_sizes_need_a_unit_and_a_positive_value(capsys: pytest.CaptureFixture[str], args: list[str],
                                                 needle: str) -> None:
    assert cli_main.main(["run", *args, "train.py"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_run_options_are_not_abbreviated(capsys: pytest.CaptureFixture[str]) -> None:
    # `--bud 5GiB x.py` would otherwise run a script named 5GiB
    assert cli_main.main(["run", "--bud", "5GiB", "train.py"]) == 2
    assert "unrecognized arguments: --bud" in capsys.readouterr().err


def test_parse_size() -> None:
    assert parse_size("8GiB") == 8 * 1024**3 and parse_size("1.5GB") == 1_500_000_000
    assert parse_size("512 mib") == 512 * 1024**2 and parse_size("100B") == 100
    for bad in ("5", "-5GiB", "0B", "0.1B", "5XB", ""):
        with pytest.raises(MemprofError):
            parse_size(bad)


@pytest.mark.parametrize("command", ["run", "monitor"])
def test_help_prints_the_usage_once_and_still_teaches(command: str) -> None:
    proc = run_memprof(command, "--help")
    assert proc.returncode == 0
    out = proc.stdout.decode()
    assert out.count("usage:") == 1, out
    assert out.startswith(f"usage: memprof {command} ")
    assert "examples:" in out and f"  memprof {command}" in out
    if command == "run":
        assert "memprof run [OPTIONS] -m MODULE [ARGS...]" in out and "--budget SIZE" in out


def _start_sleeping_run(tmp_path: Path, *script_args: str) -> tuple[subprocess.Popen[bytes], Path]:
    out, pidfile = tmp_path / "r.json", tmp_path / "pid"
    env = dict(os.environ, MEMPROF_LIVE_DIR=str(tmp_path / "live"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "memprof", "run", "--json", str(out), str(SCRIPT), "--sleep", "30",
         "--pidfile", str(pidfile), *script_args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.1)
    assert pidfile.exists()
    return proc, out


@pytest.mark.parametrize("sig, name, text", [
    (signal.SIGHUP, "SIGHUP", "Hangup"),
    pytest.param(signal.SIGTERM, "SIGTERM", "Terminated", marks=pytest.mark.slow),
])
def test_a_signal_ends_the_run_named_as_users_know_it(tmp_path: Path, sig: int, name: str, text: str) -> None:
    proc, out = _start_sleeping_run(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -sig, err.decode()  # dies of it, as python would: 128+N from a shell
    report = json.loads(out.read_text())
    assert report["status"] == "interrupted" and report["error"] == f"{name}: {text}"
    assert report["exit_code"] == 128 + sig and len(report["steps"]) == 4
    summary = err.decode()
    assert f"\n  {name}: {text}\n" in summary
    assert "_Terminated" not in summary and "Signalled" not in summary and "Traceback" not in summary


HANDLES_HUP = textwrap.dedent("""
    import os, signal, sys, time
    got = []
    signal.signal(signal.SIGHUP, lambda *a: got.append(1))
    open(sys.argv[1], "w").write(str(os.getpid()))
    deadline = time.time() + 30
    while not got and time.time() < deadline:
        time.sleep(0.05)
    print("handled", len(got))
""")


@pytest.mark.slow
def test_a_script_that_handles_sighup_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "hup.py").write_text(HANDLES_HUP)
    pidfile = tmp_path / "pid"
    proc = subprocess.Popen([sys.executable, "-m", "memprof", "run", "--json", "r.json", "hup.py", str(pidfile)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not pidfile.exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGHUP)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and stdout == b"handled 1\n"
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "ok"
