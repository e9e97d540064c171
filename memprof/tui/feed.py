"""What the screens read: a run's live feed, its log, and the list of runs on this machine.

The screens poll these (never block on them), so tests swap in fakes: a :class:`QueueFeed` they
push events into, a list of lines, a fixed list of runs. The real ones read the live channel
(:mod:`memprof.live.client`) and the child's log file.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from memprof.live.client import ChannelClosed, LiveClient, LiveRun, discover, pid_alive
from memprof.live.state import LiveState

FINAL_STATUSES = frozenset({"ok", "error", "oom", "interrupted"})

EventKind = Literal["state", "waiting", "connected", "dropped", "ended"]


@dataclass(frozen=True)
class FeedEvent:
    """One thing that happened to a run's feed.

    - ``state``: a new :class:`LiveState`;
    - ``waiting``: no channel yet (the run is starting), ``message`` says why;
    - ``connected``: the channel is up;
    - ``dropped``: the channel closed while the run was still running as far as we know;
    - ``ended``: the run is over (final state seen, or its process exited: ``exit_code``).
    """

    kind: EventKind
    state: LiveState | None = None
    message: str = ""
    exit_code: int | None = None


class RunFeed(Protocol):
    def start(self) -> None: ...

    def poll(self) -> list[FeedEvent]:
        """The events since the last poll, oldest first. Never blocks."""
        ...

    def close(self) -> None: ...


class QueueFeed:
    """A feed that gives back what was pushed into it: the base of the socket feed, and a fake."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[FeedEvent] = []
        self.started = False
        self.closed = False

    def push(self, event: FeedEvent) -> None:
        with self._lock:
            self._events.append(event)

    def push_state(self, state: LiveState) -> None:
        self.push(FeedEvent("state", state=state))

    def start(self) -> None:
        self.started = True

    def poll(self) -> list[FeedEvent]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def close(self) -> None:
        self.closed = True


class SocketFeed(QueueFeed):
    """Reads a run's live channel on a background thread, reconnecting while the run lives.

    ``exit_code``: for a run this process started, a function returning its exit status once it
    has exited (``Popen.poll``); the feed then reports ``ended`` with it. Without it, the run is
    judged over when its last state was final or its process (``state.pid``) is gone.
    """

    def __init__(
        self, path: str | os.PathLike[str], exit_code: Callable[[], int | None] | None = None, retry: float = 0.2
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self._exit_code = exit_code
        self._retry = retry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: LiveClient | None = None

    def start(self) -> None:
        super().start()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memprof-feed", daemon=True)
            self._thread.start()

    def close(self) -> None:
        super().close()
        self._stop.set()
        client = self._client
        if client is not None:
            client.close()

    def _process_exit(self, last: LiveState | None, wait: float = 0.0) -> int | None | bool:
        """The exit code (or True when it exited with an unknown code); None while it runs."""
        deadline = time.monotonic() + wait
        while True:
            if self._exit_code is not None:
                code = self._exit_code()
                if code is not None:
                    return code
            elif last is not None and last.pid and not pid_alive(last.pid):
                return True
            if time.monotonic() >= deadline or self._stop.is_set():
                return None
            time.sleep(0.05)

    def _ended(self, last: LiveState | None, exited: int | bool | None, message: str) -> None:
        code = exited if isinstance(exited, int) and not isinstance(exited, bool) else None
        self.push(FeedEvent("ended", state=last, message=message, exit_code=code))

    def _run(self) -> None:
        last: LiveState | None = None
        waiting_said = False
        while not self._stop.is_set():
            client = LiveClient(self.path, timeout=1.0)
            self._client = client
            try:
                client.connect()
            except ChannelClosed as e:
                exited = self._process_exit(last)
                if exited is not None:
                    self._ended(last, exited, "the run's process has exited")
                    return
                if not waiting_said:
                    self.push(FeedEvent("waiting", message=e.reason))
                    waiting_said = True
                self._stop.wait(self._retry)
                continue
            self.push(FeedEvent("connected", message=str(self.path)))
            waiting_said = False
            try:
                while not self._stop.is_set():
                    state = client.read(0.5)
                    if state is not None:
                        last = state
                        self.push_state(state)
            except ChannelClosed as e:
                if self._stop.is_set():
                    return
                if last is not None and last.status in FINAL_STATUSES:
                    self._ended(last, self._process_exit(last, wait=1.0), f"the run finished: {last.status}")
                    return
                exited = self._process_exit(last, wait=0.5)
                if exited is not None:
                    self._ended(last, exited, "the run's process exited without a final state")
                    return
                self.push(FeedEvent("dropped", state=last, message=e.reason))
                waiting_said = True  # the drop said it; reconnect quietly
                self._stop.wait(self._retry)
            finally:
                client.close()


# -- the script's own output ------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


def clean_line(line: str) -> str:
    """A log line as a pane shows it: no colour codes; a progress bar's last redraw (``\\r``)."""
    line = _ANSI.sub("", line.rstrip("\n"))
    if "\r" in line:
        parts = [p for p in line.split("\r") if p]
        line = parts[-1] if parts else ""
    return line.expandtabs(4)


class LogSource(Protocol):
    def poll(self) -> list[str]:
        """Complete lines written since the last poll. Never blocks."""
        ...


class FileLog:
    """Follows a log file that another process writes: each poll returns its new complete lines."""

    def __init__(self, path: str | os.PathLike[str], max_bytes: int = 1 << 20) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self._max = max_bytes

    def poll(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read(self._max)
        except OSError:
            return []
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        return [clean_line(raw.decode(errors="replace")) for raw in lines]


# -- the runs on this machine -----------------------------------------------------------------


class RunsSource(Protocol):
    def list_runs(self) -> list[LiveRun]:
        """The memprof runs publishing now. May take a moment (called off the UI thread)."""
        ...


class DirectoryRuns:
    """The runs found in the live directory (``memprof.live.client.discover``)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = directory

    def list_runs(self) -> list[LiveRun]:
        return discover(self.directory)
