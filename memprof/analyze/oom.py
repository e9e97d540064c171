"""oom: the run ran out of memory. Its line is the innermost user line of the exception's
traceback; its figures are those of the capture made at the moment it happened, when there is one.
"""

from __future__ import annotations

import os

from memprof.analyze.base import BaseDetector, RunEnd
from memprof.model import Finding, FindingKind, Severity, Status
from memprof.model.paths import is_user_file
from memprof.model.run import OomCapture
from memprof.units import fmt_bytes


class OomDetector(BaseDetector):
    kind = FindingKind.OOM

    def on_finish(self, end: RunEnd) -> list[Finding]:
        if end.status != Status.OOM:
            return []
        file, line = _user_line(end.exc)
        cap = end.data.oom
        message = "the run ran out of memory" + (f": {_capture_text(cap)}" if cap is not None else "")
        return [Finding(
            kind=self.kind, severity=Severity.ERROR, message=message,
            advice="see the batch size recommendation, or the largest tensors below",
            file=file, line=line, bytes=(cap.requested_bytes or 0) if cap is not None else 0,
            step=cap.step if cap is not None else None,
        )]


def _user_line(exc: BaseException | None) -> tuple[str | None, int | None]:
    """The innermost user frame of the traceback."""
    file = line = None
    tb = exc.__traceback__ if exc is not None else None
    while tb is not None:
        fn = tb.tb_frame.f_code.co_filename
        if is_user_file(fn):
            file, line = (fn if fn.startswith("<") else os.path.abspath(fn)), tb.tb_lineno
        tb = tb.tb_next
    return file, line


def _capture_text(cap: OomCapture) -> str:
    held = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in sorted(cap.breakdown.items(), key=lambda kv: -kv[1]) if v)
    req = f"requested {fmt_bytes(cap.requested_bytes)} with " if cap.requested_bytes else ""
    limit = f" of {fmt_bytes(cap.limit_bytes)}" if cap.limit_bytes else ""
    return f"{req}{fmt_bytes(cap.live_bytes)} in use{limit} at step {cap.step}: {held}"
