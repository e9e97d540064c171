"""``memprof run --tui``: the profiled run as a child process, its live view in the foreground.

The run and the UI are two processes joined only by the live socket and a log file:

- the child (``memprof run`` without ``--tui``) publishes on ``$MEMPROF_LIVE_SOCKET`` and writes its
  stdout and stderr (merged, in order) to a private log file, never to a pipe of ours; it runs in
  its own session, so the UI closing, crashing or being killed, or the terminal hanging up, never
  stops it;
- the UI (:class:`~memprof.tui.run_screen.RunApp`) tails the log in its log pane;
- when the UI closes (``q``) or fails, the run's output so far is printed to the terminal and the
  rest follows as it comes; we wait for the run and return its exit status.

Ctrl+C: inside the UI, ctrl+c sends SIGINT to the run (it stops and writes its report, as with
plain ``memprof run``); after the UI closed, Ctrl+C in the terminal is forwarded to the run the same
way. SIGHUP (the terminal closed, e.g. its tmux session killed) and SIGTERM end the run as under
python: they are passed on to the run, which writes its report (status ``interrupted``) and dies of
the signal; the live view closes; this process waits for the run, then dies of the same signal
(a shell says 129 or 143). An ignored SIGHUP (``nohup``) stays ignored, by both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

from memprof.errors import MemprofError
from memprof.live.paths import ENV_SOCKET, ensure_private_dir, live_dir


class _Runnable(Protocol):
    def run(self) -> Any: ...


AppFactory = Callable[..., _Runnable]


def _default_app(**kwargs: Any) -> _Runnable:
    from memprof.hw.gpu import get_backend
    from memprof.tui.run_screen import RunApp

    return RunApp(gpu=get_backend(), **kwargs)


def _private_dir() -> Path:
    try:
        return ensure_private_dir(live_dir())
    except OSError:
        return Path(tempfile.mkdtemp(prefix="memprof-"))  # 0700 too


def _exit_status(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell says


class _Ending:
    """SIGHUP and SIGTERM to this process while the run lives: passed on to the run (in its own
    session, it sees no hang-up of the terminal), the live view asked to close, the signal kept in
    ``signum`` for :meth:`die`."""

    GRACE = 10.0  # seconds the UI has, after the run ended, to close before this process exits anyway

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.child = child
        self.app: _Runnable | None = None
        self.signum: int | None = None
        self.done = threading.Event()
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):  # not the main thread: no forwarding
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # nohup: ignored here, and so by the run, which inherited it
                self.previous[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            os.kill(self.child.pid, signum)
        if self.signum is not None:
            return
        self.signum = signum
        app, self.app = self.app, None
        if app is not None:
            self._close(app)
        threading.Thread(target=self._watchdog, daemon=True, name="memprof-tui-ending").start()

    @staticmethod
    def _close(app: _Runnable) -> None:
        close = getattr(app, "exit", None)
        if not callable(close):
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with contextlib.suppress(Exception):
            if loop is not None:  # the signal interrupted the UI's event loop: close it from the loop
                loop.call_soon_threadsafe(close)
            else:
                close()

    def _watchdog(self) -> None:
        """The UI stuck on a terminal that is gone: once the run ended, exit as a shell would say."""
        self.child.wait()
        if not self.done.wait(self.GRACE):
            os._exit(128 + (self.signum or signal.SIGHUP))

    def restore(self) -> None:
        for sig, old in self.previous.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, old)
        self.previous = {}

    def die(self) -> None:
        """Restore the handlers; with a signal received, die of it, as python would have."""
        self.done.set()
        self.restore()
        if self.signum is not None:
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.flush()
            signal.signal(self.signum, signal.SIG_DFL)
            os.kill(os.getpid(), self.signum)


def _plain(child_argv: list[str], env: dict[str, str]) -> int:
    """The run without the live view (no terminal), signals passed on as with it."""
    child = subprocess.Popen(child_argv, env=env)
    ending = _Ending(child)
    ending.install()
    try:
        code = _exit_status(_wait(child))
    finally:
        ending.die()
    return code


def _wait(child: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:  # Ctrl+C reached the run too (one process group): wait for its report
            continue


def run_with_tui(
    child_argv: list[str],
    env: dict[str, str],
    *,
    app_factory: AppFactory | None = None,
    out: IO[str] | None = None,
) -> int:
    """Run ``child_argv`` (a ``memprof run ...`` without ``--tui``) under the live UI; its exit status.

    ``env`` is the child's environment; ``MEMPROF_LIVE_SOCKET`` is added to it. ``app_factory``
    builds the UI (tests pass a fake); it is called with ``feed``, ``log`` and ``interrupt``.
    """
    out = out if out is not None else sys.stdout
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if app_factory is None and not interactive:
        print("memprof: --tui needs a terminal; running without the live view.", file=sys.stderr)
        return _plain(child_argv, env)

    folder = _private_dir()
    token = secrets.token_hex(4)
    sock_path = folder / f"run-{token}.sock"  # named without a pid: it outlives this process if need be
    log_path = folder / f"run-{token}.log"
    child_env = dict(env)
    child_env[ENV_SOCKET] = str(sock_path)
    child_env.setdefault("PYTHONUNBUFFERED", "1")  # so the log pane shows output as it is printed
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
    try:
        child = subprocess.Popen(
            child_argv, env=child_env, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as e:
        with contextlib.suppress(OSError):
            log_path.unlink()
        raise MemprofError(f"cannot start {child_argv[0]}: {e.strerror or e}", exit_code=1) from None
    finally:
        os.close(fd)

    def interrupt() -> str:
        if child.poll() is not None:
            return "The run has already ended."
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGINT)
        return f"Sent SIGINT to the run (pid {child.pid}): it stops and writes its report."

    ending = _Ending(child)
    ending.install()
    ui_error: str | None = None
    try:
        from memprof.tui.feed import FileLog, SocketFeed

        feed = SocketFeed(sock_path, exit_code=child.poll, retry=0.1)
        app = (app_factory or _default_app)(feed=feed, log=FileLog(log_path), interrupt=interrupt)
        ending.app = app
        try:
            if ending.signum is None:
                app.run()
        finally:
            ending.app = None
            feed.close()
        code = getattr(app, "return_code", 0)
        if code:
            ui_error = f"exited with status {code}"
    except BaseException as e:  # the UI failing, however, must not touch the run
        ui_error = f"{type(e).__name__}: {e}" if not isinstance(e, KeyboardInterrupt) else "interrupted"

    if ending.signum is not None:
        pass  # the run ends of the signal too; after a hang-up its output has nowhere to go
    elif child.poll() is None:
        why = f"stopped ({ui_error})" if ui_error else "closed"
        print(f"memprof: the live view {why}; the run goes on (pid {child.pid}) and will write its report. "
              "Its output follows; Ctrl+C interrupts it.", file=sys.stderr)
    elif ui_error:
        print(f"memprof: the live view stopped ({ui_error}).", file=sys.stderr)
    try:
        return _follow(child, log_path, out)
    finally:
        with contextlib.suppress(OSError):
            log_path.unlink()
        ending.die()


def _follow(child: subprocess.Popen[bytes], log_path: Path, out: IO[str]) -> int:
    """Copy the log to ``out`` from its start until the child exits; Ctrl+C is passed on to it."""

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGINT)

    previous: Any = None
    with contextlib.suppress(ValueError):  # not the main thread: no handler, the run still goes on
        previous = signal.signal(signal.SIGINT, forward)
    writable = True  # until the terminal is gone (a hang-up): then the run is only waited for
    try:
        with open(log_path, "rb") as log:
            while True:
                done = child.poll() is not None
                chunk = log.read(1 << 16)
                if chunk:
                    if writable:
                        try:
                            _write(out, chunk)
                        except (OSError, ValueError):
                            writable = False
                    continue
                if done:
                    break
                time.sleep(0.1)
        return _exit_status(child.wait())
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _write(out: IO[str], chunk: bytes) -> None:
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        out.flush()
        buffer.write(chunk)
        buffer.flush()
    else:
        out.write(chunk.decode(errors="replace"))
        out.flush()

