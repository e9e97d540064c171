"""The live channel: publisher and client over a Unix socket, discovery, permissions, robustness."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memprof.live.client import ChannelClosed, LiveClient, discover, discover_runs
from memprof.live.paths import ENV_DIR, ENV_SOCKET, live_dir
from memprof.live.publisher import LivePublisher
from memprof.live.state import LiveSample, LiveState


@pytest.fixture
def publisher(live_home: Path) -> Iterator[LivePublisher]:
    pub = LivePublisher.start({"script": "train.py", "argv": ["--epochs", "3"]})
    yield pub
    pub.close()


def state(step: int, **kw: object) -> LiveState:
    return LiveState(pid=os.getpid(), script="train.py", step=step, **kw)  # type: ignore[arg-type]


def test_round_trip(publisher: LivePublisher) -> None:
    assert publisher.error is None
    assert publisher.path is not None and publisher.path.name == f"{os.getpid()}.sock"
    with LiveClient(publisher.path, timeout=2) as client:
        first = client.read()
        assert first is not None
        assert (first.script, first.argv, first.pid, first.status) == ("train.py", ["--epochs", "3"], os.getpid(),
                                                                       "running")
        publisher.publish(state(7, samples=[LiveSample(t=0.5, bytes=123, step=7)],
                                findings=[{"kind": "accumulated_tensor", "line": 3}]))
        got = client.read()
        assert got is not None and got.step == 7
        assert got.samples == [LiveSample(t=0.5, bytes=123, step=7)]
        assert got.findings[0]["kind"] == "accumulated_tensor"


def test_permissions_are_owner_only(live_home: Path) -> None:
    live_home.mkdir(mode=0o755)
    os.chmod(live_home, 0o755)
    pub = LivePublisher.start()
    try:
        assert pub.path is not None
        assert stat.S_IMODE(live_home.stat().st_mode) == 0o700
        assert stat.S_IMODE(pub.path.stat().st_mode) == 0o600
        assert stat.S_ISSOCK(pub.path.stat().st_mode)
    finally:
        pub.close()


def test_live_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(ENV_DIR, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert live_dir() == tmp_path / "memprof"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert live_dir() == Path(f"/tmp/memprof-{os.getuid()}")
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "x"))
    assert live_dir() == tmp_path / "x"


def test_explicit_socket_path(live_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live_home.mkdir(mode=0o700)
    target = live_home / "run-abc.sock"
    monkeypatch.setenv(ENV_SOCKET, str(target))
    pub = LivePublisher.start({"script": "x.py"})
    try:
        assert pub.path == target and target.exists()
        assert [s.script for s in discover_runs()] == ["x.py"]
    finally:
        pub.close()
    assert not target.exists()


def test_close_sends_final_state_and_removes_socket(publisher: LivePublisher) -> None:
    assert publisher.path is not None
    path = publisher.path
    client = LiveClient(path, timeout=2).connect()
    assert client.read() is not None
    publisher.publish(state(99, status="ok"))
    publisher.close()
    last = None
    with pytest.raises(ChannelClosed, match="closed"):
        while True:
            got = client.read()
            last = got or last
    assert last is not None and (last.step, last.status) == (99, "ok")
    assert client.closed_reason and "closed" in client.closed_reason
    assert not path.exists()
    publisher.publish(state(100))  # after close: a no-op, no error
    publisher.close()


def test_client_reports_missing_channel(live_home: Path) -> None:
    with pytest.raises(ChannelClosed, match="no live channel"):
        LiveClient(live_home / "nope.sock").connect()


def test_start_never_raises(live_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live_home.parent.mkdir(exist_ok=True)
    live_home.write_text("a file where the folder should be")
    try:
        pub = LivePublisher.start()
        assert pub.path is None and pub.error and "disabled" in pub.error
        assert not pub.enabled
        pub.publish(state(1))
        pub.close()
        monkeypatch.setenv(ENV_SOCKET, "/tmp/" + "x" * 200 + ".sock")  # too long for AF_UNIX
        pub = LivePublisher.start()
        assert pub.path is None and pub.error
        pub.publish(state(1))
        pub.close()
    finally:
        live_home.unlink()


def test_publish_never_blocks_without_readers(publisher: LivePublisher) -> None:
    assert publisher.path is not None
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(str(publisher.path))  # connected, never reads: its buffers fill up
    big = [{"name": f"m{i}", "type": "Linear", "activation_bytes": i} for i in range(3000)]
    try:
        t0 = time.perf_counter()
        for i in range(2000):
            publisher.publish(state(i, modules=big))
        per_call = (time.perf_counter() - t0) / 2000
        # A blocked publish would wait for the reader forever; the bound only tells blocking from not
        # (the cost itself is measured in benchmarks/, not asserted here).
        assert per_call < 5e-3, f"publish took {per_call * 1e6:.0f} µs: it waits for the reader"
        time.sleep(0.2)
        # The publisher still serves a new reader the latest state.
        with LiveClient(publisher.path, timeout=2) as client:
            got = client.read()
            assert got is not None and got.step == 1999
    finally:
        idle.close()


def test_publisher_survives_client_dropping_mid_send(publisher: LivePublisher) -> None:
    assert publisher.path is not None
    big = [{"name": f"m{i}", "type": "Conv2d", "activation_bytes": i} for i in range(20000)]  # ~1 MB a state
    for _ in range(3):
        rude = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        rude.connect(str(publisher.path))
        publisher.publish(state(1, modules=big))
        rude.recv(1000)  # part of a line, then gone
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        rude.close()
        publisher.publish(state(2, modules=big))
    time.sleep(0.1)
    with LiveClient(publisher.path, timeout=3) as client:
        publisher.publish(state(3))
        deadline = time.monotonic() + 3
        got = client.read()
        while got is not None and got.step != 3 and time.monotonic() < deadline:
            got = client.read()
        assert got is not None and got.step == 3
    assert publisher.error is None
    assert publisher._thread is not None and publisher._thread.is_alive()


_CHILD = textwrap.dedent("""
    import sys, time
    from memprof.live.publisher import LivePublisher
    from memprof.live.state import LiveState
    pub = LivePublisher.start({"script": "child.py", "argv": ["--steps", "5"]})
    pub.publish(LiveState(pid=__import__("os").getpid(), script="child.py", step=5, current_bytes=1024))
    print("ready", flush=True)
    time.sleep(60)
""")


def test_discover_runs_in_another_process_and_cleans_stale(live_home: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ))
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        runs = discover(live_home)
        assert [(r.state.script, r.state.step, r.state.pid) for r in runs] == [("child.py", 5, child.pid)]
        sock = runs[0].path
        child.send_signal(signal.SIGKILL)  # no chance to remove its socket
        child.wait(5)
        assert sock.exists()
        assert discover_runs(live_home) == []
        assert not sock.exists(), "the dead run's socket is removed"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_discover_removes_sockets_nobody_listens_on(live_home: Path) -> None:
    live_home.mkdir(mode=0o700)
    dead_pid = live_home / "999999999.sock"  # no such process
    orphan = live_home / "run-dead.sock"  # no pid in the name, nobody listening, old
    young = live_home / "run-young.sock"  # nobody listening yet, just created: kept
    for p in (dead_pid, orphan, young):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(p))
        s.close()
    old = time.time() - 60
    os.utime(orphan, (old, old))
    (live_home / "notes.txt").write_text("not a socket")
    assert discover_runs(live_home) == []
    assert not dead_pid.exists() and not orphan.exists()
    assert young.exists() and (live_home / "notes.txt").exists()


def test_forked_child_does_not_remove_the_socket(publisher: LivePublisher, monkeypatch: pytest.MonkeyPatch) -> None:
    assert publisher.path is not None
    monkeypatch.setattr(publisher, "_owner", os.getpid() + 1)  # as seen from a forked DataLoader worker
    publisher.close()
    assert publisher.path.exists()
    monkeypatch.setattr(publisher, "_owner", os.getpid())
    publisher._closed = False
    publisher.close()
    assert not publisher.path.exists()
