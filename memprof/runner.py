"""Running a script or module exactly as ``python`` would, inside a session.

Same ``sys.argv``, ``sys.path[0]``, ``__main__``, stdout/stderr and exit status. The report is
written whatever happens: a normal end, an exception, an out-of-memory, ``sys.exit``, SIGINT
(``KeyboardInterrupt``), SIGTERM or SIGHUP (a closed terminal): each of the last two is turned into
an exception named after it (so the stack unwinds and the report says ``SIGTERM``), unless the
script handles that signal itself, and memprof dies of the signal after the report, as python would.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.machinery
import io
import os
import runpy
import signal
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, ClassVar

from memprof.errors import MemprofError
from memprof.model import Report, Status


class Signalled(BaseException):
    """A signal that ends the run arrived: unwind the script like an exception, then die of the
    signal after the report. Each subclass is named as users know the signal (``SIGTERM``)."""

    signum: ClassVar[signal.Signals]

    def __init__(self) -> None:
        super().__init__(signal.strsignal(self.signum) or self.signum.name)


class SIGTERM(Signalled):
    """``kill PID``: the report reads ``SIGTERM: Terminated``."""

    signum = signal.SIGTERM


class SIGHUP(Signalled):
    """The terminal closed: the report reads ``SIGHUP: Hangup``."""

    signum = signal.SIGHUP


ENDING_SIGNALS: tuple[type[Signalled], ...] = (SIGTERM, SIGHUP)


@dataclass
class Target:
    path: str | None = None  # a script, as the user typed it
    module: str | None = None  # or -m MODULE

    @property
    def display(self) -> str:
        return self.path if self.path is not None else f"-m {self.module}"


def check_target(target: Target) -> None:
    """Fail as python does, before any profiling, where python would not start the script: a
    missing or unreadable script (exit 2), a folder without ``__main__.py`` or a missing module
    (exit 1); python's one line, no summary, no report."""
    if target.path is not None:
        path = os.path.abspath(target.path)
        if os.path.isdir(path):
            if not os.path.exists(os.path.join(path, "__main__.py")):
                raise MemprofError(f"can't find '__main__' module in '{path}'", exit_code=1)
            return
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise MemprofError(f"can't open file '{path}': [Errno {e.errno}] {e.strerror}") from None
    elif target.module is not None:
        _check_module(target.module)


def _check_module(name: str) -> None:
    import importlib.util

    sys.path.insert(0, os.getcwd())
    try:
        spec = importlib.util.find_spec(name)
        locations = spec.submodule_search_locations if spec is not None else None
        # a package runs its __main__, found without importing the package before the session
        main = importlib.machinery.PathFinder.find_spec("__main__", list(locations)) if locations else spec
    except (ImportError, ValueError) as e:
        raise MemprofError(f"Error while finding module specification for {name!r} ({type(e).__name__}: {e})",
                           exit_code=1) from None
    finally:
        sys.path.pop(0)
    if spec is None:
        raise MemprofError(f"No module named {name}", exit_code=1)
    if main is None:
        raise MemprofError(f"No module named {name}.__main__; {name!r} is a package and cannot be directly "
                           "executed", exit_code=1)


def _user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """Skip memprof's and runpy's frames so the traceback reads like plain python's: the ones
    above the script, and the ones below it where memprof raised (a rehearsed out-of-memory)."""
    here = os.path.dirname(os.path.abspath(__file__))

    def ours(t: TracebackType) -> bool:
        name = t.tb_frame.f_code.co_filename
        if name.startswith("<frozen runpy"):
            return True
        fn = os.path.abspath(name)
        return fn.startswith(here) or os.path.basename(fn) == "runpy.py"

    while tb is not None and ours(tb):
        tb = tb.tb_next
    last_theirs, t = None, tb
    while t is not None:
        if not ours(t):
            last_theirs = t
        elif last_theirs is not None and all(ours(u) for u in _chain(t)):
            last_theirs.tb_next = None  # only memprof below this point
            break
        t = t.tb_next
    return tb


def _chain(tb: TracebackType | None) -> list[TracebackType]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def _exit_code(code: Any) -> int:
    """What python does with SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if code >= 0 else code % 256
    try:
        sys.stderr.write(f"{code}\n")
    except Exception:
        pass
    return 1


def _run_path(path: str, keep: list[object]) -> None:
    """Run a script as ``python path`` does: ``__file__`` and its code's file name absolute (so
    warnings and tracebacks name the same file), ``sys.argv[0]`` as typed, a fresh ``__main__``.
    A directory or a zip file (``__main__.py`` inside) goes to runpy. The script's module goes to
    ``keep``: its globals live on until the report is made, as under python until the exit."""
    if not os.path.isfile(path) or path.endswith((".zip", ".pyz")):
        runpy.run_path(path, run_name="__main__")
        return
    fname = os.path.abspath(path)
    with io.open_code(fname) as fh:
        code = compile(fh.read(), fname, "exec")
    main = ModuleType("__main__")
    keep.append(main)
    main.__dict__.update(__file__=fname, __cached__=None, __builtins__=builtins, __package__=None, __spec__=None,
                         __loader__=importlib.machinery.SourceFileLoader("__main__", fname))
    old = sys.modules.get("__main__")
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    finally:
        if old is not None:
            sys.modules["__main__"] = old


def run_target(target: Target, args: list[str], session_factory: Callable[[], Any],
               finish: Callable[[Report], None]) -> int:
    """Run ``target`` with ``args`` under a fresh session; call ``finish(report)``; return the exit status."""
    old_argv, old_path0 = sys.argv, sys.path[0] if sys.path else None
    if target.path is not None:
        sys.argv = [target.path, *args]
        sys.path[0:1] = [os.path.dirname(os.path.abspath(target.path))]
    else:
        sys.argv = [target.module or "", *args]  # runpy puts the module's path here
        sys.path[0:1] = [os.getcwd()]
    started_in = os.getcwd()
    guard = _SignalGuard()
    session = session_factory()
    status, code, die_of = Status.OK, 0, None
    exc: BaseException | None = None
    kept: list[object] = []  # the script's module (or globals), alive until the report is made
    try:
        guard.install()
        session.start()
        if target.path is not None:
            _run_path(target.path, kept)
        else:
            kept.append(runpy.run_module(target.module or "", run_name="__main__", alter_sys=True))
    except SystemExit as e:
        code = _exit_code(e.code)
        status = Status.OK if code == 0 else Status.ERROR
    except Signalled as e:
        status, exc, code, die_of = Status.INTERRUPTED, e, 128 + e.signum, e.signum
    except KeyboardInterrupt as e:
        status, exc, code, die_of = Status.INTERRUPTED, e, 130, signal.SIGINT
        _print_exception(e)
    except BaseException as e:
        import torch

        status = Status.OOM if isinstance(e, torch.OutOfMemoryError) else Status.ERROR
        exc, code = e, 1
        _print_exception(e)
    finally:
        guard.raising = False  # a signal while the report is written: noted, and died of at the end
        with contextlib.suppress(OSError):  # the report names paths as seen from where memprof started
            os.chdir(started_in)
    try:
        report = session.stop(status, exc, exit_code=code)
        finish(report)
    except Exception as e:  # a memprof failure must not change the script's exit status
        warning = f"memprof: warning: could not write the report: {e}"
        _quietly(lambda: print(warning, file=sys.stderr))
    finally:
        kept.clear()
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
        guard.restore()
    _quietly(sys.stdout.flush)
    _quietly(sys.stderr.flush)  # after a hang-up the terminal is gone: nothing to flush to
    die_of = die_of or guard.received
    if die_of is not None:  # die of the same signal, as python does, so a parent sees the same status
        signal.signal(die_of, signal.SIG_DFL)
        os.kill(os.getpid(), die_of)
        code = 128 + die_of  # where the signal is blocked
    return code


def _print_exception(e: BaseException) -> None:
    _quietly(lambda: traceback.print_exception(type(e), e, _user_traceback(e.__traceback__)))


def _quietly(write: Callable[[], object]) -> None:
    try:
        write()
    except (OSError, ValueError):  # a closed terminal (EIO), a closed stream
        pass


class _SignalGuard:
    """SIGTERM and SIGHUP, where nobody handles them yet (an ignored SIGHUP, under ``nohup``, stays
    ignored; a handler the script installs replaces ours): while the script runs, the signal's
    exception is raised in it, once; after that, or once the script ended (``raising`` off), a
    signal is only noted in ``received``: the report is still written and memprof dies of the
    signal afterwards."""

    def __init__(self) -> None:
        self.raising = True
        self.received: signal.Signals | None = None
        self.previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        for kind in ENDING_SIGNALS:
            try:
                if signal.getsignal(kind.signum) not in (signal.SIG_DFL, None):
                    continue
                self.previous[kind.signum] = signal.signal(kind.signum, self._handler(kind))
            except (ValueError, OSError):  # not the main thread: python's own behaviour stays
                continue

    def _handler(self, kind: type[Signalled]) -> Callable[[int, Any], None]:
        def handler(signum: int, frame: Any) -> None:
            if self.raising:  # once: a second signal (a hang-up seen twice) must not cut the unwinding
                self.raising = False
                raise kind()
            self.received = self.received or kind.signum

        return handler

    def restore(self) -> None:
        for signum, old in self.previous.items():
            try:
                signal.signal(signum, old)
            except (ValueError, OSError):
                pass
        self.previous = {}
