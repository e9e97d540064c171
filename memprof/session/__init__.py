"""The profiling session and its collaborators (see :mod:`memprof.session.core`)."""

from memprof.session.config import SessionConfig
from memprof.session.core import Session

__all__ = ["Session", "SessionConfig"]
