"""The readers' side: what ``memprof monitor``, the ``--tui`` screen or any other tool reads.

::

    with LiveClient(path) as client:
        for state in client.updates():   # raises ChannelClosed when the run goes away
            ...
    discover_runs()                       # one state from every live run of this user

Each line on the socket is one ``LiveState.to_dict()`` as JSON (written by
:mod:`memprof.live.publisher`); a client gets the latest state on connecting, then each newer one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from memprof.live.paths import SUFFIX, live_dir, pid_from_name
from memprof.live.state import LiveState

# A socket file that refuses connections is removed only once it is this old (seconds), so a
# publisher between bind() and listen() is never mistaken for a dead one.
STALE_AFTER = 2.0
_MAX_LINE = 256 * 1024 * 1024


class ChannelClosed(ConnectionError):
    """The live channel is gone: the run ended, or it could not be reached. ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class LiveClient:
    """Reads the states a run publishes on ``path``.

    ``read()`` returns the next state (None on timeout); :meth:`updates` yields them; both raise
    :class:`ChannelClosed` with a readable reason when the run is gone or cannot be reached.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float | None = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self.closed_reason: str | None = None
        self.last: LiveState | None = None

    def connect(self) -> LiveClient:
        if self._sock is not None:
            return self
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except FileNotFoundError:
            sock.close()
            raise ChannelClosed(f"no live channel at {self.path} (the run has not started, or has ended)") from None
        except ConnectionRefusedError:
            sock.close()
            raise ChannelClosed(f"nothing listens on {self.path} (the run has ended)") from None
        except OSError as e:
            sock.close()
            raise ChannelClosed(f"cannot connect to {self.path}: {e.strerror or e}") from None
        self._sock = sock
        self.closed_reason = None
        return self

    def read(self, timeout: float | None = -1.0) -> LiveState | None:
        """The next state; None if none came within ``timeout`` seconds (default: the client's)."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        self._sock.settimeout(self.timeout if timeout is not None and timeout < 0 else timeout)
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(1 << 16)
            except (TimeoutError, BlockingIOError):
                return None
            except OSError as e:
                self._lost(f"the live channel broke: {e.strerror or e}")
            if not chunk:
                self._lost("the live channel closed: the run ended or stopped publishing")
            self._buf += chunk
            if len(self._buf) > _MAX_LINE:
                self._lost("the live channel sent an oversized message")
        raw, self._buf = self._buf.split(b"\n", 1)
        try:
            state = LiveState.from_dict(json.loads(raw))
        except (ValueError, TypeError) as e:
            self._lost(f"the live channel sent something unreadable: {e}")
        self.last = state
        return state

    def read_latest(self, timeout: float | None = -1.0) -> LiveState | None:
        """Like :meth:`read`, but skips to the newest state already received."""
        state = self.read(timeout)
        while state is not None and b"\n" in self._buf:
            state = self.read(0)
        return state

    def updates(self) -> Iterator[LiveState]:
        """Every state as it comes; ends by raising :class:`ChannelClosed`."""
        while True:
            state = self.read(None)
            if state is not None:
                yield state

    def _lost(self, reason: str) -> NoReturn:
        self.closed_reason = reason
        self.close()
        raise ChannelClosed(reason)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self._buf = b""

    def __enter__(self) -> LiveClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class LiveRun:
    """A run found in the live directory: its socket and the state it served."""

    path: Path
    state: LiveState


def discover(directory: str | os.PathLike[str] | None = None, timeout: float = 0.5) -> list[LiveRun]:
    """Every live run in the live directory, oldest first; removes sockets of runs that are gone."""
    folder = live_dir(directory)
    try:
        candidates = sorted(folder.glob(f"*{SUFFIX}"))
    except OSError:
        return []
    runs: list[LiveRun] = []
    for path in candidates:
        try:
            st = path.lstat()
        except OSError:
            continue
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid():
            continue
        pid = pid_from_name(path)
        if pid is not None and not pid_alive(pid):
            _remove_stale(path, st.st_ino)
            continue
        client = LiveClient(path, timeout=timeout)
        try:
            state = client.read_latest(timeout)
        except ChannelClosed:
            if time.time() - st.st_mtime > STALE_AFTER and not _accepts(path):
                _remove_stale(path, st.st_ino)
            continue
        finally:
            client.close()
        if state is not None:
            runs.append(LiveRun(path=path, state=state))
    runs.sort(key=lambda r: (r.state.started_at, r.state.pid))
    return runs


def discover_runs(dir: str | os.PathLike[str] | None = None) -> list[LiveState]:
    """The latest state of every memprof run publishing on this machine (for this user)."""
    return [run.state for run in discover(dir)]


def _accepts(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.2)
    try:
        sock.connect(str(path))
        return True
    except OSError as e:
        return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        sock.close()


def _remove_stale(path: Path, inode: int) -> None:
    with contextlib.suppress(OSError):
        if path.lstat().st_ino == inode:
            path.unlink()
