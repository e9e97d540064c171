"""The user's frames on the stack, by the one rule of :mod:`memprof.model.paths`."""

from __future__ import annotations

import sys
import threading
from types import FrameType

from memprof.model.paths import is_user_file, judged

__all__ = ["is_user_file", "main_thread_frame", "user_frame", "user_frames"]


def user_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost user frame at or above ``frame``."""
    while frame is not None:
        name = frame.f_code.co_filename
        hit = judged.get(name)  # at every model call: a lookup per frame, a call only for a new file
        if hit or (hit is None and is_user_file(name)):
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
