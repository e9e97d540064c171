"""``memprof monitor``: the Textual app over fake GPUs and runs, and the plain-text ``--once``."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import DataTable, Static

from memprof.cli.main import main
from memprof.hw.gpu import NoGpuBackend
from memprof.live.client import LiveRun
from memprof.live.publisher import LivePublisher
from memprof.tui.feed import QueueFeed, RunFeed
from memprof.tui.format import plain_report
from memprof.tui.monitor_app import MonitorApp
from memprof.tui.run_screen import RunScreen
from tests.tui_fakes import LOSS_FINDING, STARTED_AT, FakeGpuBackend, FakeRuns, fake_gpus, make_state, run_async

SIZE = (150, 45)


def two_runs() -> FakeRuns:
    return FakeRuns([
        make_state(step=120, findings=[LOSS_FINDING]),
        make_state(step=7, pid=5151, script="/home/u/train_big.py", argv=["--epochs", "3"], status="ok"),
    ])


def make_app(gpu: FakeGpuBackend | NoGpuBackend, runs: FakeRuns, **kw: object) -> MonitorApp:
    return MonitorApp(gpu, runs, interval=60.0, clock=lambda: STARTED_AT + 83, hostname="gpu-box",
                      live_directory="/tmp/memprof-test", **kw)  # type: ignore[arg-type]


def plain(app: MonitorApp, selector: str) -> str:
    content = app.query_one(selector, Static).content
    return content.plain if isinstance(content, Text) else str(content)


def rows(table: DataTable[object]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def ready(app: MonitorApp, pilot: object) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()  # type: ignore[attr-defined]


@run_async
async def test_no_gpu_still_lists_runs() -> None:
    app = make_app(NoGpuBackend("NVML unavailable: NVML Shared Library Not Found"), two_runs())
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert app.query_one("#no-gpu").display and not app.query_one("#gpus").display
        assert "No GPU on this machine" in plain(app, "#no-gpu") and "Shared Library" in plain(app, "#no-gpu")
        assert "no GPU" in plain(app, "#topbar") and "2 memprof runs" in plain(app, "#topbar")
        table = app.query_one("#runs", DataTable)
        listed = rows(table)
        assert [r[0] for r in listed] == ["4242", "5151"]
        assert listed[0][1] == "loss_history.py --steps 3000" and listed[0][3] == "120" and listed[0][9] == "1"
        assert "accumulated_tensor total_loss" in listed[0][10]
        assert listed[1][2] == "FINISHED"
        detail = plain(app, "#run-detail")
        assert "step 120" in detail and "total_loss" in detail and "loss.item()" in detail


@run_async
async def test_fake_gpus_and_their_processes() -> None:
    app = make_app(fake_gpus(), two_runs())
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert app.query_one("#gpus").display and not app.query_one("#no-gpu").display
        gpus = rows(app.query_one("#gpus", DataTable))
        assert [(g[0], g[1], g[3], g[4], g[6]) for g in gpus] == [
            ("0", "NVIDIA H100 80GB HBM3", "41.0 GiB", "80.0 GiB", "87%"),
            ("1", "NVIDIA H100 80GB HBM3", "512 MiB", "80.0 GiB", "0%"),
        ]
        procs = rows(app.query_one("#procs", DataTable))
        assert [p[1] for p in procs] == ["4242", "777"]
        assert "loss_history.py" in procs[0][4], "the GPU process that is a memprof run says so"
        assert procs[1][4] == ""


@run_async
async def test_runs_come_and_go_and_refresh_key() -> None:
    runs = FakeRuns([])
    app = make_app(NoGpuBackend(), runs)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        assert app.query_one("#runs", DataTable).row_count == 0
        assert "No memprof run" in plain(app, "#run-detail")
        assert "none found in /tmp/memprof-test" in str(app.query_one("#runs").border_subtitle)
        runs.states = [make_state(step=3)]
        calls = runs.calls
        await pilot.press("r")
        await ready(app, pilot)
        assert runs.calls == calls + 1
        assert rows(app.query_one("#runs", DataTable))[0][3] == "3"


@run_async
async def test_enter_opens_the_live_view_and_q_comes_back() -> None:
    opened: list[LiveRun] = []
    feed = QueueFeed()

    def factory(run: LiveRun) -> RunFeed:
        opened.append(run)
        feed.push_state(run.state)
        return feed

    app = make_app(NoGpuBackend(), two_runs(), feed_factory=factory)
    async with app.run_test(size=SIZE) as pilot:
        await ready(app, pilot)
        await pilot.press("down")  # the second run
        assert "5151" in str(app.query_one("#run-detail").border_title)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, RunScreen) and app.screen.embedded
        assert [r.state.pid for r in opened] == [5151]
        app.screen.poll_now()
        assert app.screen.state is not None and app.screen.state.pid == 5151
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, RunScreen) and feed.closed
        assert app.is_running, "q in the run view goes back; it does not quit the monitor"
        await pilot.press("q")
    assert app.return_code == 0


def test_plain_report() -> None:
    text = plain_report(fake_gpus().snapshot(), [make_state(findings=[LOSS_FINDING])], "/tmp/x")
    assert "2 GPUs (NVIDIA H100 80GB HBM3) via fake" in text
    assert "41.0 GiB" in text and "87%" in text and "python serve.py" in text
    assert "memprof runs: 1" in text and "loss_history.py --steps 3000" in text and "total_loss" in text
    empty = plain_report(NoGpuBackend("no driver").snapshot(), [], "/tmp/x")
    assert empty.splitlines()[0] == "No GPU: no driver"
    assert "memprof runs: none (looked in /tmp/x)" in empty



def test_monitor_once_lists_a_live_run_without_gpu(live_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pub = LivePublisher.start({"script": "/data/train.py", "argv": ["--lr", "0.1"]})
    try:
        pub.publish(make_state(step=42, pid=os.getpid(), script="/data/train.py", argv=["--lr", "0.1"]))
        time.sleep(0.05)
        assert main(["monitor", "--once", "--gpu-backend", "none"]) == 0
    finally:
        pub.close()
    out = capsys.readouterr().out
    assert out.startswith("No GPU: GPU monitoring turned off")
    assert "memprof runs: 1" in out and "train.py --lr 0.1" in out and " 42 " in out


def test_monitor_once_without_runs(live_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "--once"]) == 0
    out = capsys.readouterr().out
    assert f"memprof runs: none (looked in {live_home})" in out


def test_monitor_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "--interval", "0"]) == 2
    assert "--interval must be between" in capsys.readouterr().err
    assert main(["monitor", "--gpu-backend", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memprof: error:") and "Traceback" not in err


def test_monitor_help_summary(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["monitor", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Watch the GPUs of this machine and every memprof run on it, live." in out
    assert "--once" in out and "--interval" in out
