"""`memprof run --tui` and a closed terminal (SIGHUP) or SIGTERM: as under python, the run ends with
its report, the live view closes, and memprof dies of the signal; nothing is left running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Runs run_with_tui with a stand-in UI that runs until it is asked to exit (as RunApp.exit does).
DRIVER = textwrap.dedent("""
    import os, sys, time
    from memprof.tui.launch import run_with_tui

    marks = sys.argv[1]

    class App:
        def __init__(self, **kw):
            self.closed = False
        def exit(self):
            self.closed = True
        def run(self):
            open(os.path.join(marks, "ui"), "w").close()
            deadline = time.monotonic() + 30
            while not self.closed and time.monotonic() < deadline:
                time.sleep(0.02)
            open(os.path.join(marks, "ui-closed" if self.closed else "ui-timeout"), "w").close()

    child = [sys.executable, "-c", sys.argv[2], marks]
    sys.exit(run_with_tui(child, dict(os.environ), app_factory=lambda **kw: App(**kw)))
""")

# The run: ends of the signal, as python does, after a moment of unwinding (its report).
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    marks = sys.argv[1]
    def ending(signum, frame):
        time.sleep(0.5)
        open(os.path.join(marks, f"child-got-{signum}"), "w").close()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    signal.signal(signal.SIGHUP, ending)
    signal.signal(signal.SIGTERM, ending)
    open(os.path.join(marks, "child-pid"), "w").write(str(os.getpid()))
    time.sleep(30)
""")


def _wait_for(path: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_to_the_live_view_ends_the_run_and_memprof_dies_of_it(live_home: Path, tmp_path: Path,
                                                                        sig: int) -> None:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path), CHILD], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(tmp_path / "ui")
    _wait_for(tmp_path / "child-pid")
    child = int((tmp_path / "child-pid").read_text())
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -sig, err.decode()  # as python would: a shell says 128+N
    assert (tmp_path / f"child-got-{int(sig)}").exists(), "the run got the signal, and unwound before we left"
    assert (tmp_path / "ui-closed").exists(), "the live view was closed"
    assert not _alive(child), "no orphaned run"
    assert list(live_home.glob("run-*")) == [], "socket and log are cleaned up"


SLEEPY = textwrap.dedent("""
    import os, sys, time
    import torch
    x = torch.ones(1000)
    open(sys.argv[1], "w").write(str(os.getpid()))
    for i in range(600):
        print("tick", i, flush=True)
        time.sleep(0.1)
""")

# What a shell does when its terminal closes: pass SIGHUP on to its job; and note the job's status.
SHELL = textwrap.dedent("""
    import os, signal, subprocess, sys
    job = subprocess.Popen(sys.argv[2:])
    signal.signal(signal.SIGHUP, lambda *a: os.kill(job.pid, signal.SIGHUP))
    code = job.wait()
    open(sys.argv[1], "w").write(str(code))
""")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_closing_the_terminal_of_a_tui_run_ends_it_with_its_report(tmp_path: Path) -> None:
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    (tmp_path / "shell.py").write_text(SHELL)
    pidfile, status = tmp_path / "pid", tmp_path / "status"
    live = f"/tmp/mpt-hup-{os.getpid()}"
    name = f"memprof-test-{os.getpid()}"
    command = (f"cd {tmp_path} && MEMPROF_LIVE_DIR={live} PYTHONPATH={ROOT} {sys.executable} shell.py {status} "
               f"{sys.executable} -m memprof run --tui --json r.json sleepy.py {pidfile}")
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "120", "-y", "40", command], check=True)
    try:
        _wait_for(pidfile, 60)
        time.sleep(1)  # the live view is up
        run_pid = int(pidfile.read_text())
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False)
    _wait_for(status, 60)
    assert status.read_text() == str(-signal.SIGHUP), "memprof died of SIGHUP, as python would"
    assert not _alive(run_pid), "no orphaned run"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "interrupted" and report["error"] == "SIGHUP: Hangup"
    assert report["exit_code"] == 128 + signal.SIGHUP
    shutil.rmtree(live, ignore_errors=True)
