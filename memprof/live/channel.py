"""The live channel: a profiled process publishes its :class:`LiveState` on a local Unix socket.

Publisher (inside the profiled process)::

    pub = LivePublisher.start({"script": "train.py", "argv": [...]})   # never raises
    pub.publish(state)     # cheap, never blocks, never raises; only the latest state is kept
    pub.close()            # sends the last state to connected clients, removes the socket file

Readers (``memprof monitor``, the ``--tui`` screen, anything else)::

    with LiveClient(path) as client:
        for state in client.updates():   # raises ChannelClosed when the run goes away
            ...
    discover_runs()                       # one state from every live run of this user

Wire format: newline-delimited JSON, one ``LiveState.to_dict()`` per line. A client receives the
latest state when it connects and then each newer one; a slow client skips states instead of
slowing the run down. All the socket work (accepting, serialising, sending) happens on one daemon
thread, so training never waits on a reader and never dies with one.

Where sockets live: ``$MEMPROF_LIVE_DIR``, else ``$XDG_RUNTIME_DIR/memprof``, else
``/tmp/memprof-<uid>``; the directory is 0700 and each socket ``<pid>.sock`` is 0600, so only the
user who runs the profiler can read it. ``$MEMPROF_LIVE_SOCKET`` names the exact socket to publish
on (``memprof run --tui`` uses it to tell the profiled child where its UI listens).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import selectors
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from memprof.live.state import LiveState

ENV_DIR = "MEMPROF_LIVE_DIR"
ENV_SOCKET = "MEMPROF_LIVE_SOCKET"
SUFFIX = ".sock"
# A socket file that refuses connections is removed only once it is this old (seconds), so a
# publisher between bind() and listen() is never mistaken for a dead one.
STALE_AFTER = 2.0
_MAX_LINE = 256 * 1024 * 1024


class ChannelClosed(ConnectionError):
    """The live channel is gone: the run ended, or it could not be reached. ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def live_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The folder of live sockets (not created here)."""
    if directory is not None:
        return Path(directory)
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "memprof"
    return Path(f"/tmp/memprof-{os.getuid()}")


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` as 0700, or check an existing one is ours; then make sure it is 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user; refusing to publish there")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def publish_path(pid: int | None = None) -> Path:
    """Where this process publishes: ``$MEMPROF_LIVE_SOCKET``, else ``<live dir>/<pid>.sock``."""
    explicit = os.environ.get(ENV_SOCKET)
    if explicit:
        return Path(explicit)
    return live_dir() / f"{os.getpid() if pid is None else pid}{SUFFIX}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _encode(state: LiveState | dict[str, Any]) -> bytes:
    d = state.to_dict() if isinstance(state, LiveState) else state
    return (json.dumps(d, separators=(",", ":"), default=str) + "\n").encode()


class _Client:
    __slots__ = ("sock", "buf", "sent_seq", "want_write")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.sent_seq = -1
        self.want_write = False


class LivePublisher:
    """Serves the latest :class:`LiveState` of this process to any local reader.

    Made by :meth:`start`, which never raises: when the socket cannot be set up the publisher is
    disabled (its methods do nothing) and ``error`` says why.
    """

    def __init__(self, path: Path | None, error: str | None = None) -> None:
        self._path = path
        self.error: str | None = error
        self._owner = os.getpid()
        self._latest: LiveState | dict[str, Any] | None = None
        self._seq = 0  # bumped by publish(); read by the server thread
        self._listener: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stop = False
        self._closed = False
        self._inode: int | None = None
        self.clients = 0  # connected readers, for display
        self.sent = 0  # lines sent, all clients together

    # -- set-up -------------------------------------------------------------------------------
    @classmethod
    def start(cls, info: dict[str, Any] | None = None) -> LivePublisher:
        """Listen on :func:`publish_path`; ``info`` (LiveState fields: script, argv, ...) is served
        until the first :meth:`publish`, so readers see the run at once. Never raises."""
        try:
            path = publish_path()
        except Exception as e:  # pragma: no cover - environment oddities
            return cls(None, error=f"live channel disabled: {e}")
        pub = cls(path)
        try:
            pub._open(path)
            pub.publish(pub._initial_state(info or {}))
        except Exception as e:
            pub._teardown()
            pub.error = f"live channel disabled: {type(e).__name__}: {e}"
            pub._path = None
        return pub

    @staticmethod
    def _initial_state(info: dict[str, Any]) -> LiveState:
        fields = {k: v for k, v in info.items() if k in LiveState.__dataclass_fields__ and k != "samples"}
        fields.setdefault("pid", os.getpid())
        fields.setdefault("script", sys.argv[0] if sys.argv and sys.argv[0] else "<python>")
        fields.setdefault("started_at", time.time())
        return LiveState(**fields)

    def _open(self, path: Path) -> None:
        ensure_private_dir(path.parent)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # a leftover of a dead process with our pid (or of an earlier try)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener = listener
        listener.bind(str(path))
        os.chmod(path, 0o600)
        self._inode = path.lstat().st_ino
        listener.listen(8)
        listener.setblocking(False)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._serve, name="memprof-live", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def path(self) -> Path | None:
        """The socket's path; None when the publisher is disabled."""
        return self._path

    @property
    def enabled(self) -> bool:
        return self._thread is not None and not self._closed

    # -- the profiled process's side ------------------------------------------------------------
    def publish(self, state: LiveState) -> None:
        """Make ``state`` the one served. O(1): no copy, no serialisation, no waiting.

        The state object is read later, on the server thread: publish a fresh object each time
        rather than mutating one already published."""
        if self._thread is None or self._closed:
            return
        self._latest = state
        self._seq += 1
        try:
            os.write(self._wake_w, b"!")
        except OSError:  # pipe full (the thread is already awake) or closed
            pass

    def close(self) -> None:
        """Send the latest state to connected readers (briefly), stop serving, remove the socket."""
        if self._closed or os.getpid() != self._owner:  # a forked child (DataLoader worker) owns nothing
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        self._stop = True
        if self._thread is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"!")
            self._thread.join(timeout=2.0)
        self._teardown()

    def _teardown(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.close()
            self._listener = None
        if self._path is not None and self._inode is not None:
            with contextlib.suppress(OSError):
                if self._path.lstat().st_ino == self._inode:  # still ours, not a newer run's
                    self._path.unlink()
            self._inode = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> LivePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the server thread --------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            self._serve_loop()
        except Exception as e:  # never let the channel take the run down; just stop serving
            self.error = f"live channel stopped: {type(e).__name__}: {e}"

    def _serve_loop(self) -> None:
        assert self._listener is not None
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        clients: dict[int, _Client] = {}
        line = b""
        line_seq = -1
        try:
            while not self._stop:
                for key, events in sel.select(timeout=1.0):
                    if key.data == "accept":
                        self._accept(sel, clients)
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            while os.read(self._wake_r, 4096):
                                pass
                    else:
                        client = clients.get(key.fd)
                        if client is None:
                            continue
                        if events & selectors.EVENT_READ and not self._readable(client):
                            self._drop(sel, clients, client)
                        elif events & selectors.EVENT_WRITE:
                            self._flush(sel, clients, client)
                seq = self._seq
                # Encode only for someone: with no reader connected the run pays nothing here.
                if seq != line_seq and self._latest is not None and clients:
                    try:
                        line, line_seq = _encode(self._latest), seq
                    except Exception as e:  # e.g. mutated while encoding; the next publish retries
                        self.error = f"could not encode live state: {type(e).__name__}: {e}"
                for client in list(clients.values()):
                    if not client.buf and client.sent_seq != line_seq and line:
                        client.buf, client.sent_seq = line, line_seq
                        self._flush(sel, clients, client)
            # Closing: one last state to whoever listens, within a short grace period.
            latest = self._latest
            if latest is not None and clients:
                with contextlib.suppress(Exception):
                    line, line_seq = _encode(latest), self._seq
                deadline = time.monotonic() + 0.5
                for client in list(clients.values()):
                    while time.monotonic() < deadline:
                        if not client.buf and client.sent_seq != line_seq:
                            client.buf, client.sent_seq = line, line_seq
                        if not client.buf or not self._flush(sel, clients, client):
                            break
                        if client.buf:
                            time.sleep(0.005)
        finally:
            for client in list(clients.values()):
                self._drop(sel, clients, client)
            sel.close()

    def _accept(self, sel: selectors.BaseSelector, clients: dict[int, _Client]) -> None:
        assert self._listener is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            conn.setblocking(False)
            client = _Client(conn)
            clients[conn.fileno()] = client
            sel.register(conn, selectors.EVENT_READ, "client")
            self.clients = len(clients)

    @staticmethod
    def _readable(client: _Client) -> bool:
        """Readers send nothing; readable means closed (or junk to discard). False: drop it."""
        try:
            data = client.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        return bool(data)

    def _flush(self, sel: selectors.BaseSelector, clients: dict[int, _Client], client: _Client) -> bool:
        """Send what the client can take now. False if it was dropped."""
        try:
            while client.buf:
                n = client.sock.send(client.buf, getattr(socket, "MSG_NOSIGNAL", 0))
                client.buf = client.buf[n:]
                if not client.buf:
                    self.sent += 1
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # EPIPE, ECONNRESET: the reader went away mid-send
            self._drop(sel, clients, client)
            return False
        want_write = bool(client.buf)
        if want_write != client.want_write:
            client.want_write = want_write
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            with contextlib.suppress(KeyError, ValueError, OSError):
                sel.modify(client.sock, mask, "client")
        return True

    def _drop(self, sel: selectors.BaseSelector, clients: dict[int, _Client], client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            sel.unregister(client.sock)
        clients.pop(client.sock.fileno(), None)
        with contextlib.suppress(OSError):
            client.sock.close()
        self.clients = len(clients)


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


def _pid_from_name(path: Path) -> int | None:
    head = path.name[: -len(SUFFIX)].split("-", 1)[0]
    return int(head) if head.isdigit() else None


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
        pid = _pid_from_name(path)
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
