"""``run_with_tui``: the run is a child that outlives the UI; its output and exit status come through."""

from __future__ import annotations

import io
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from memprof.live.state import LiveState
from memprof.tui.feed import FeedEvent, FileLog, SocketFeed
from memprof.tui.launch import run_with_tui

# A stand-in for `memprof run script.py`: publishes on $MEMPROF_LIVE_SOCKET, prints, exits with 3.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from memprof.live.publisher import LivePublisher
    from memprof.live.state import LiveState
    pub = LivePublisher.start({"script": "fake_train.py"})
    interrupted = []
    signal.signal(signal.SIGINT, lambda *a: interrupted.append(1))
    for step in range(int(sys.argv[1])):
        if interrupted:
            pub.publish(LiveState(pid=os.getpid(), script="fake_train.py", step=step, status="interrupted"))
            print("interrupted at", step, flush=True)
            pub.close()
            sys.exit(130)
        pub.publish(LiveState(pid=os.getpid(), script="fake_train.py", step=step))
        print("step", step, flush=True)
        time.sleep(0.02)
    pub.publish(LiveState(pid=os.getpid(), script="fake_train.py", step=step, status="ok"))
    pub.close()
    print("done", file=sys.stderr, flush=True)
    sys.exit(3)
""")



def child_argv(steps: int) -> list[str]:
    return [sys.executable, "-c", CHILD, str(steps)]


class FakeApp:
    """Stands for RunApp: reads the feed like the UI would, then does what the test says."""

    def __init__(self, feed: SocketFeed, log: FileLog, interrupt: Any, then: str = "close", until_step: int = 3):
        self.feed, self.log, self.interrupt, self.then, self.until_step = feed, log, interrupt, then, until_step
        self.states: list[LiveState] = []
        self.events: list[FeedEvent] = []
        self.lines: list[str] = []
        self.return_code = 0

    def run(self) -> None:
        self.feed.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for e in self.feed.poll():
                self.events.append(e)
                if e.state is not None:
                    self.states.append(e.state)
            self.lines += self.log.poll()
            if self.then == "wait-end" and any(e.kind == "ended" for e in self.events):
                return
            if self.then != "wait-end" and self.states and self.states[-1].step >= self.until_step:
                break
            time.sleep(0.02)
        if self.then == "crash":
            raise RuntimeError("the UI blew up")
        if self.then == "interrupt":
            self.message = self.interrupt()


def test_ui_closing_early_leaves_the_run_going(live_home: Path) -> None:
    apps: list[FakeApp] = []

    def factory(**kw: Any) -> FakeApp:
        apps.append(FakeApp(**kw))
        return apps[-1]

    out = io.StringIO()
    code = run_with_tui(child_argv(25), dict(os.environ), app_factory=factory, out=out)
    assert code == 3, "the child's exit status"
    app = apps[0]
    assert app.states and app.states[0].script == "fake_train.py"
    assert any(line.startswith("step") for line in app.lines), "the log pane sees the script's output"
    text = out.getvalue()
    assert text.startswith("step 0\n"), "after the UI closes the whole output is printed, from the start"
    assert "step 24" in text and "done" in text, "the run went on to the end after the UI closed"
    assert list(live_home.glob("run-*")) == [], "socket and log are cleaned up"


def test_ui_crashing_never_kills_the_run(live_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    code = run_with_tui(child_argv(15), dict(os.environ), app_factory=lambda **kw: FakeApp(then="crash", **kw),
                        out=out)
    assert code == 3
    assert "step 14" in out.getvalue() and "done" in out.getvalue()
    err = capsys.readouterr().err
    assert "the live view stopped (RuntimeError: the UI blew up)" in err and "the run goes on" in err


def test_interrupt_from_the_ui_sends_sigint(live_home: Path) -> None:
    apps: list[FakeApp] = []

    def factory(**kw: Any) -> FakeApp:
        apps.append(FakeApp(then="interrupt", **kw))
        return apps[-1]

    out = io.StringIO()
    code = run_with_tui(child_argv(500), dict(os.environ), app_factory=factory, out=out)
    assert code == 130
    assert "interrupted at" in out.getvalue()
    assert "SIGINT" in apps[0].message


def test_the_ui_sees_the_run_end(live_home: Path) -> None:
    apps: list[FakeApp] = []

    def factory(**kw: Any) -> FakeApp:
        apps.append(FakeApp(then="wait-end", **kw))
        return apps[-1]

    assert run_with_tui(child_argv(50), dict(os.environ), app_factory=factory, out=io.StringIO()) == 3
    ended = [e for e in apps[0].events if e.kind == "ended"]
    assert ended and ended[0].state is not None and ended[0].state.status == "ok"


def test_without_a_terminal_it_runs_plainly(live_home: Path, capfd: pytest.CaptureFixture[str]) -> None:
    code = run_with_tui(child_argv(2), dict(os.environ))  # pytest's stdin is not a terminal
    assert code == 3
    captured = capfd.readouterr()
    assert "--tui needs a terminal" in captured.err and "step 1" in captured.out
