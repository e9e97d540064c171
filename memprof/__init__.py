"""memprof: a GPU memory profiler and out-of-memory doctor for PyTorch.

Importing memprof has no side effects: nothing is hooked until a session starts
(``memprof.track()``, ``@memprof.profile`` or ``memprof run``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memprof._version import __version__
from memprof.model import (
    Breakdown,
    Category,
    Finding,
    FindingKind,
    Recommendation,
    RecommendationKind,
    Report,
    Severity,
    Status,
)
from memprof.report.json_io import load_report

if TYPE_CHECKING:
    from memprof.api import profile, track
    from memprof.report.summary import render_summary

__all__ = [
    "__version__", "track", "profile", "load_report", "Report", "Finding", "FindingKind", "Recommendation",
    "RecommendationKind", "Severity", "Status", "Breakdown", "Category", "render_summary",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext memprof`` in IPython or Jupyter: the ``%memprof`` and ``%%memprof`` magics."""
    from memprof.integrations.ipython import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    # torch is imported only when a session is asked for, so `import memprof` stays cheap.
    if name in ("track", "profile", "Session"):
        from memprof import api

        return getattr(api, name)
    if name == "render_summary":  # the terminal summary of a report, as `memprof run` prints it
        from memprof.report.summary import render_summary

        return render_summary
    raise AttributeError(f"module 'memprof' has no attribute {name!r}")
