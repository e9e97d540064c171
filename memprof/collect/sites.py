"""Which frames are the user's: never torch's, memprof's, the standard library's or a package's."""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
from types import FrameType

import torch

import memprof

_INTERNAL_DIRS: tuple[str, ...] = tuple(
    os.path.realpath(p) + os.sep
    for p in {
        os.path.dirname(torch.__file__),
        os.path.dirname(memprof.__file__),
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    }
)
_cache: dict[str, bool] = {}


def is_user_file(filename: str) -> bool:
    """True for the user's own source files (cached per filename; called on hot paths)."""
    hit = _cache.get(filename)
    if hit is not None:
        return hit
    if filename.startswith("<") or not filename:
        result = False
    else:
        real = os.path.realpath(filename)
        result = not real.startswith(_INTERNAL_DIRS) and "site-packages" not in real and "dist-packages" not in real
    _cache[filename] = result
    return result


def user_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost user frame at or above ``frame``."""
    while frame is not None:
        if is_user_file(frame.f_code.co_filename):
            return frame
        frame = frame.f_back
    return None


def user_frames(frame: FrameType | None, limit: int = 32) -> list[FrameType]:
    """All user frames at or above ``frame``, innermost first."""
    out: list[FrameType] = []
    while frame is not None and len(out) < limit:
        if is_user_file(frame.f_code.co_filename):
            out.append(frame)
        frame = frame.f_back
    return out


def main_thread_frame() -> FrameType | None:
    """The main thread's current frame, also when called from autograd's worker threads."""
    if threading.current_thread() is threading.main_thread():
        return sys._getframe(1)
    return sys._current_frames().get(threading.main_thread().ident or -1)


def abspath(filename: str) -> str:
    return os.path.abspath(filename)
