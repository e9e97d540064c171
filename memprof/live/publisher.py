"""The publisher: a profiled process serves its latest :class:`LiveState` on a local Unix socket.

::

    pub = LivePublisher.start({"script": "train.py", "argv": [...]})   # never raises
    pub.publish(state)     # cheap, never blocks, never raises; only the latest state is kept
    pub.close()            # sends the last state to connected clients, removes the socket file

Wire format: newline-delimited JSON, one ``LiveState.to_dict()`` per line (read back by
:mod:`memprof.live.client`). A client receives the latest state when it connects and then each
newer one; a slow client skips states instead of slowing the run down. All the socket work
(accepting, serialising, sending) happens on one daemon thread, so training never waits on a
reader and never dies with one. Where the socket goes: :mod:`memprof.live.paths`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from memprof.live.paths import ensure_private_dir, publish_path
from memprof.live.state import LiveState


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
        self.accepted = 0  # readers accepted so far: a new one wants a fresh state soon
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
            self.accepted += 1

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
