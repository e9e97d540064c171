"""Pilot tests of the run screen (``memprof run --tui``) over a fake feed, a fake log and fake GPUs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable, Digits, Log, OptionList, Static

from memprof.live.paths import ENV_SOCKET
from memprof.live.publisher import LivePublisher
from memprof.tui.feed import FeedEvent, FileLog, QueueFeed, SocketFeed, clean_line
from memprof.tui.run_screen import RunApp, RunScreen
from tests.tui_fakes import LOSS_FINDING, RECOMMENDATIONS, STARTED_AT, FakeLog, fake_gpus, make_state, run_async

SIZE = (150, 45)


def make_app(feed: QueueFeed, **kw: object) -> RunApp:
    kw.setdefault("clock", lambda: STARTED_AT + 83)
    kw.setdefault("poll_interval", 60.0)  # the tests poll by hand, so what is shown is deterministic
    return RunApp(feed, **kw)  # type: ignore[arg-type]


async def settle(pilot: Pilot[None], screen: RunScreen) -> None:
    screen.poll_now()
    await pilot.pause()


def text_of(screen: RunScreen, selector: str) -> str:
    content = screen.query_one(selector, Static).content
    return content.plain if isinstance(content, Text) else str(content)


def module_names(screen: RunScreen) -> list[str]:
    table = screen.query_one("#modules", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


@run_async
async def test_waits_then_shows_step_memory_and_modules() -> None:
    feed = QueueFeed()
    app = make_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        assert feed.started
        assert "waiting" in text_of(screen, "#topbar")
        feed.push(FeedEvent("waiting", message="no live channel yet"))
        await settle(pilot, screen)
        assert screen.query_one("#banner").display and "no live channel yet" in text_of(screen, "#banner")

        feed.push_state(make_state(step=100))
        feed.push_state(make_state(step=120))  # only the newest is drawn
        await settle(pilot, screen)
        assert screen.query_one("#step", Digits).value == "120"
        top = text_of(screen, "#topbar")
        assert "loss_history.py --steps 3000" in top and "RUNNING" in top and "0:01:23" in top
        memory = text_of(screen, "#memory-box")
        assert "Current" in memory and "Peak" in memory and "of budget" in memory and "8.00 GiB" in memory
        assert "Batch size 64" in text_of(screen, "#run-box")
        assert not screen.query_one("#banner").display
        assert module_names(screen)[:2] == ["2", "3"]  # by total bytes, largest first
        assert screen.query_one("#findings", OptionList).option_count == 0
        assert "No findings" in text_of(screen, "#finding-detail")


@run_async
async def test_sorting_keys() -> None:
    feed = QueueFeed()
    feed.push_state(make_state())
    app = make_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        await settle(pilot, screen)
        assert (screen.sort_by, screen.sort_reverse) == ("total", True)
        await pilot.press("s")  # activations
        assert screen.sort_by == "activation_bytes"
        await pilot.press("s")  # parameters
        assert screen.sort_by == "parameter_bytes"
        assert module_names(screen)[0] == "2"  # the largest conv
        await pilot.press("r")
        assert not screen.sort_reverse
        assert module_names(screen)[-1] == "2"
        for _ in range(2):
            await pilot.press("s")
        assert screen.sort_by == "name" and not screen.sort_reverse
        assert module_names(screen) == sorted(module_names(screen))
        assert "sorted by Module ▲" in str(screen.query_one("#modules").border_subtitle)


@run_async
async def test_clicking_a_header_sorts_by_it() -> None:
    feed = QueueFeed()
    feed.push_state(make_state())
    app = make_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        await settle(pilot, screen)
        table = screen.query_one("#modules", DataTable)
        table.post_message(DataTable.HeaderSelected(table, table.ordered_columns[1].key, 1, table.ordered_columns[1].label))
        await pilot.pause()
        assert screen.sort_by == "type" and not screen.sort_reverse
        types = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert types == sorted(types)


@run_async
async def test_a_finding_arrives_while_it_runs() -> None:
    feed = QueueFeed()
    feed.push_state(make_state(step=10))
    app = make_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        await settle(pilot, screen)
        assert screen.announced == []
        feed.push_state(make_state(step=12, findings=[LOSS_FINDING], recommendations=RECOMMENDATIONS))
        await settle(pilot, screen)
        listing = screen.query_one("#findings", OptionList)
        assert listing.option_count == 1
        shown = str(listing.get_option_at_index(0).prompt)
        assert "accumulated_tensor" in shown and "loss_history.py:29" in shown and "total_loss" in shown
        assert "1.25 MiB" in shown and "total_loss += loss.item()" in shown
        assert len(screen.announced) == 1 and "total_loss" in screen.announced[0]
        detail = text_of(screen, "#finding-detail")
        assert "/work/shared/cases/loss_history.py:29" in detail and "autograd graph" in detail
        recs = text_of(screen, "#recommendations")
        assert "batch_size 64 → 192" in recs and "mixed_precision" in recs
        feed.push_state(make_state(step=13, findings=[LOSS_FINDING]))
        await settle(pilot, screen)
        assert len(screen.announced) == 1, "a finding is announced once"
        await pilot.press("f")
        assert screen.focused is listing


@run_async
async def test_the_run_ending() -> None:
    feed = QueueFeed()
    feed.push_state(make_state(step=2999))
    interrupts: list[int] = []

    def interrupt() -> str:
        interrupts.append(1)
        return "sent"

    app = make_app(feed, interrupt=interrupt)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        await settle(pilot, screen)
        final = make_state(step=3000, status="ok", report_path="/tmp/report.json")
        feed.push(FeedEvent("ended", state=final, message="the run finished: ok", exit_code=0))
        await settle(pilot, screen)
        assert screen.link == "ended" and screen.exit_code == 0
        assert screen.query_one("#step", Digits).value == "3,000"
        assert "FINISHED" in text_of(screen, "#topbar")
        banner = screen.query_one("#banner")
        assert banner.display and banner.has_class("-ended")
        assert "exit code 0" in text_of(screen, "#banner") and "/tmp/report.json" in text_of(screen, "#banner")
        await pilot.press("ctrl+c")
        assert interrupts == [], "nothing to interrupt once the run is over"
        await pilot.press("q")
    assert feed.closed


@run_async
async def test_a_failed_run_is_marked() -> None:
    feed = QueueFeed()
    feed.push(FeedEvent("ended", state=make_state(status="oom"), exit_code=1))
    app = make_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        await settle(pilot, screen)
        assert screen.query_one("#banner").has_class("-failed")
        assert "OUT OF MEMORY" in text_of(screen, "#topbar")


@run_async
async def test_the_channel_dropping_and_coming_back() -> None:
    feed = QueueFeed()
    feed.push_state(make_state(step=50))
    app = make_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        await settle(pilot, screen)
        feed.push(FeedEvent("dropped", message="the live channel broke: Connection reset by peer"))
        await settle(pilot, screen)
        banner = screen.query_one("#banner")
        assert screen.link == "dropped" and banner.has_class("-dropped")
        assert "Live channel lost" in text_of(screen, "#banner") and "Connection reset" in text_of(screen, "#banner")
        assert "not affected" in text_of(screen, "#banner")
        assert screen.query_one("#step", Digits).value == "50", "the last state stays on screen"
        feed.push(FeedEvent("connected"))
        feed.push_state(make_state(step=60))
        await settle(pilot, screen)
        assert screen.link == "live" and not banner.display
        assert screen.query_one("#step", Digits).value == "60"


@run_async
async def test_keys_close_interrupt_and_log() -> None:
    feed = QueueFeed()
    feed.push_state(make_state())
    log = FakeLog(["epoch 1", "loss 2.30"])
    sent: list[str] = []

    def interrupt() -> str:
        sent.append("SIGINT")
        return "Sent SIGINT to the run"

    app = make_app(feed, log=log, interrupt=interrupt)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        await settle(pilot, screen)
        log_widget = screen.query_one("#log", Log)
        assert list(log_widget.lines) == ["epoch 1", "loss 2.30"]
        log.add("epoch 2")
        await settle(pilot, screen)
        assert list(log_widget.lines)[-1] == "epoch 2"
        await pilot.press("l")
        assert log_widget.has_class("-big")
        await pilot.press("l")
        assert not log_widget.has_class("-big")
        await pilot.press("ctrl+c")
        assert sent == ["SIGINT"]
        assert "run goes on" in text_of(screen, "#hint")
        await pilot.press("q")
        assert not app.is_running or app._exit_renderables is not None  # exiting
    assert app.return_code == 0
    assert feed.closed


@run_async
async def test_without_a_run_to_interrupt_or_log() -> None:
    feed = QueueFeed()
    app = make_app(feed)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        assert not screen.query_one("#log").display
        await pilot.press("ctrl+c")  # nothing to interrupt: a notice, and the UI stays
        await pilot.press("l")
        assert app.is_running


@run_async
async def test_device_panel_shows_gpus_and_this_run() -> None:
    feed = QueueFeed()
    feed.push_state(make_state(pid=4242, device={"type": "cuda", "name": "NVIDIA H100 80GB HBM3",
                                                 "total_bytes": 80 * 1024**3}, budget=None))
    app = make_app(feed, gpu=fake_gpus())
    async with app.run_test(size=SIZE) as pilot:
        screen = app.run_screen
        await settle(pilot, screen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        devices = text_of(screen, "#devices")
        assert "GPU 0" in devices and "GPU 1" in devices and "41.0 GiB/80.0 GiB" in devices
        assert "4242" in devices and "util 87%" in devices
        assert "of device" in text_of(screen, "#memory-box"), "no budget: measured against the device"


def test_clean_line_and_file_log(tmp_path: Path) -> None:
    assert clean_line("\x1b[31mred\x1b[0m\n") == "red"
    assert clean_line(" 10%|#\r 50%|#####\r") == " 50%|#####"
    path = tmp_path / "out.log"
    log = FileLog(path)
    assert log.poll() == []
    with open(path, "ab") as f:
        f.write(b"one\ntw")
    assert log.poll() == ["one"]
    with open(path, "ab") as f:
        f.write(b"o\nthree\n")
    assert log.poll() == ["two", "three"]


def wait_for(feed: SocketFeed, kind: str, timeout: float = 5.0) -> list[FeedEvent]:
    seen: list[FeedEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += feed.poll()
        if any(e.kind == kind for e in seen):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"no {kind!r} event; got {[e.kind for e in seen]}")


def test_socket_feed_over_a_real_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(f"/tmp/mpf-{os.getpid()}.sock")
    monkeypatch.setenv(ENV_SOCKET, str(path))
    feed = SocketFeed(path, retry=0.02)
    feed.start()
    try:
        events = wait_for(feed, "waiting")
        assert "no live channel" in events[0].message
        pub = LivePublisher.start({"script": "t.py"})
        pub.publish(make_state(step=5, pid=os.getpid()))
        events = wait_for(feed, "state")
        assert events[0].kind == "connected"
        pub.publish(make_state(step=6, pid=os.getpid(), status="ok"))
        pub.close()
        events = wait_for(feed, "ended")
        ended = events[-1]
        assert ended.kind == "ended" and ended.state is not None and ended.state.status == "ok"
    finally:
        feed.close()


def test_socket_feed_reports_a_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(f"/tmp/mpd-{os.getpid()}.sock")
    monkeypatch.setenv(ENV_SOCKET, str(path))
    pub = LivePublisher.start({"script": "t.py"})
    feed = SocketFeed(path, exit_code=lambda: None, retry=0.02)  # the process is still running
    feed.start()
    try:
        wait_for(feed, "state")
        pub.close()  # the channel goes while the run is "running"
        events = wait_for(feed, "dropped")
        assert "closed" in events[-1].message
    finally:
        feed.close()
