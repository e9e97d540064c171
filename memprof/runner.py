"""Running a script or module exactly as ``python`` would, inside a session.

Same ``sys.argv``, ``sys.path[0]``, ``__main__``, stdout/stderr and exit status. The report is
written whatever happens: a normal end, an exception, an out-of-memory, ``sys.exit``, SIGINT
(``KeyboardInterrupt``) or SIGTERM (turned into an exception so the stack unwinds).
"""

from __future__ import annotations

import builtins
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
from typing import Any

from memprof.errors import MemprofError
from memprof.model import Report, Status


class _Terminated(BaseException):
    """SIGTERM arrived: unwind the script like an exception, then die of SIGTERM after the report."""


@dataclass
class Target:
    path: str | None = None  # a script, as the user typed it
    module: str | None = None  # or -m MODULE

    @property
    def display(self) -> str:
        return self.path if self.path is not None else f"-m {self.module}"


def check_target(target: Target) -> None:
    if target.path is not None:
        if not os.path.exists(target.path):
            raise MemprofError(f"can't open file '{target.path}': no such file")
        if os.path.isdir(target.path) and not os.path.exists(os.path.join(target.path, "__main__.py")):
            raise MemprofError(f"can't find '__main__' module in '{target.path}'")
    elif target.module is not None:
        import importlib.util

        sys.path.insert(0, os.getcwd())
        try:
            spec = importlib.util.find_spec(target.module)
        except (ImportError, ValueError):
            spec = None
        finally:
            sys.path.pop(0)
        if spec is None:
            raise MemprofError(f"no module named {target.module}")


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


def _run_path(path: str) -> None:
    """Run a script as ``python path`` does: ``__file__`` and its code's file name absolute (so
    warnings and tracebacks name the same file), ``sys.argv[0]`` as typed, a fresh ``__main__``.
    A directory or a zip file (``__main__.py`` inside) goes to runpy."""
    if not os.path.isfile(path) or path.endswith((".zip", ".pyz")):
        runpy.run_path(path, run_name="__main__")
        return
    fname = os.path.abspath(path)
    with io.open_code(fname) as fh:
        code = compile(fh.read(), fname, "exec")
    main = ModuleType("__main__")
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
    old_term = _install_sigterm()
    session = session_factory()
    status, code, term, intr = Status.OK, 0, False, False
    exc: BaseException | None = None
    try:
        session.start()
        if target.path is not None:
            _run_path(target.path)
        else:
            runpy.run_module(target.module or "", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = _exit_code(e.code)
        status = Status.OK if code == 0 else Status.ERROR
    except _Terminated as e:
        status, exc, code, term = Status.INTERRUPTED, e, 128 + signal.SIGTERM, True
    except KeyboardInterrupt as e:
        status, exc, code, intr = Status.INTERRUPTED, e, 130, True
        traceback.print_exception(type(e), e, _user_traceback(e.__traceback__))
    except BaseException as e:
        import torch

        status = Status.OOM if isinstance(e, torch.OutOfMemoryError) else Status.ERROR
        exc, code = e, 1
        traceback.print_exception(type(e), e, _user_traceback(e.__traceback__))
    finally:
        _restore_sigterm(old_term)
    try:
        report = session.stop(status, exc, exit_code=code)
        finish(report)
    except Exception as e:  # a memprof failure must not change the script's exit status
        print(f"memprof: warning: could not write the report: {e}", file=sys.stderr)
    finally:
        sys.argv = old_argv
        if old_path0 is not None and sys.path:
            sys.path[0] = old_path0
    sys.stdout.flush()
    sys.stderr.flush()
    # Die of the same signal, as python does, so a parent sees the same status.
    for flag, sig in ((term, signal.SIGTERM), (intr, signal.SIGINT)):
        if flag:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
    return code


def _install_sigterm() -> Any:
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return None  # someone else handles SIGTERM: leave it to them

    def handler(signum: int, frame: Any) -> None:
        raise _Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _restore_sigterm(old: Any) -> None:
    if old is not None:
        try:
            signal.signal(signal.SIGTERM, old)
        except ValueError:
            pass
