"""Snapshots of the main screens at 150x45 (pytest-textual-snapshot; update with --snapshot-update)."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from memprof.hw.gpu import NoGpuBackend
from memprof.tui.feed import FeedEvent, QueueFeed
from memprof.tui.monitor_app import MonitorApp
from memprof.tui.run_screen import RunApp
from tests.tui_fakes import LOSS_FINDING, RECOMMENDATIONS, STARTED_AT, FakeLog, FakeRuns, fake_gpus, make_state

SIZE = (150, 45)
NO_GPU = "NVML unavailable: NVML Shared Library Not Found"


def run_app(*events: FeedEvent, log: FakeLog | None = None, gpu: Any = None) -> RunApp:
    feed = QueueFeed()
    for e in events:
        feed.push(e)
    return RunApp(feed, gpu=gpu, log=log, clock=lambda: STARTED_AT + 83, poll_interval=60.0, interrupt=lambda: "")


async def settle(pilot: Pilot[None]) -> None:
    app = pilot.app
    if isinstance(app, RunApp):
        app.run_screen.poll_now()
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


def test_run_screen_with_finding(snap_compare: Any) -> None:
    state = make_state(findings=[LOSS_FINDING], recommendations=RECOMMENDATIONS)
    app = run_app(FeedEvent("connected"), FeedEvent("state", state=state),
                  log=FakeLog([f"epoch 0 step {i} loss {2.3 - i / 100:.3f}" for i in range(12)]), gpu=fake_gpus())
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_run_screen_waiting(snap_compare: Any) -> None:
    app = run_app(FeedEvent("waiting", message="no live channel yet (the run is starting)"), log=FakeLog(),
                  gpu=NoGpuBackend(NO_GPU))
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_run_screen_channel_lost(snap_compare: Any) -> None:
    app = run_app(FeedEvent("state", state=make_state(step=1500, findings=[LOSS_FINDING])),
                  FeedEvent("dropped", message="the live channel broke: Connection reset by peer"),
                  gpu=NoGpuBackend(NO_GPU))
    assert snap_compare(app, terminal_size=SIZE, run_before=settle)


def test_run_screen_finished(snap_compare: Any) -> None:
    final = make_state(step=3000, status="ok", findings=[LOSS_FINDING], recommendations=RECOMMENDATIONS,
                       report_path="/home/u/report.json")
    app = run_app(FeedEvent("ended", state=final, message="the run finished: ok", exit_code=0),
                  log=FakeLog(["mean loss 2.3010"]), gpu=NoGpuBackend(NO_GPU))
    assert snap_compare(app, terminal_size=SIZE, run_before=settle, press=["s"])


def monitor(gpu: Any) -> MonitorApp:
    runs = FakeRuns([
        make_state(findings=[LOSS_FINDING], recommendations=RECOMMENDATIONS),
        make_state(step=7, pid=5151, script="/home/u/train_big.py", argv=["--epochs", "3"], status="ok"),
    ])
    return MonitorApp(gpu, runs, interval=60.0, clock=lambda: STARTED_AT + 83, hostname="gpu-box",
                      live_directory="/tmp/memprof-1000")


def test_monitor_with_gpus(snap_compare: Any) -> None:
    assert snap_compare(monitor(fake_gpus()), terminal_size=SIZE, run_before=settle)


def test_monitor_without_gpu(snap_compare: Any) -> None:
    assert snap_compare(monitor(NoGpuBackend(NO_GPU)), terminal_size=SIZE, run_before=settle)
