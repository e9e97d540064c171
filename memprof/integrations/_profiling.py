"""One memprof session opened and closed by a framework's callbacks (Lightning, Hugging Face).

A framework calls back at the start and the end of a run, not around a block, so the session of
:func:`memprof.api.track` is entered and left by hand here; the report's files are written at the
end, after the integration has added what only the framework's objects show (its own findings).
memprof's own failures are told in one line on stderr, never raised into the user's training.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memprof.api import track
from memprof.model.paths import is_user_file
from memprof.report.outputs import write_outputs
from memprof.units import fmt_bytes

if TYPE_CHECKING:
    from memprof.model import Finding, Report


def user_frame_site(depth: int = 1) -> tuple[str, int] | None:
    """(file, line) of the innermost user frame on the stack: the line that called the framework."""
    frame: Any = sys._getframe(depth)
    while frame is not None:
        if is_user_file(frame.f_code.co_filename):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None


@dataclass(frozen=True)
class Period:
    """What a part of the run (an epoch) added: its steps, its highest step peak, new problems."""

    steps: int
    peak_bytes: int
    new_findings: int

    def line(self, what: str) -> str:
        found = f"{self.new_findings} new finding{'s' if self.new_findings != 1 else ''}"
        return f"memprof: {what}: peak {fmt_bytes(self.peak_bytes)}, {self.steps} steps, {found}"


class Profiling:
    """A session started by :meth:`start` and stopped by :meth:`stop`; its report at :attr:`report`."""

    def __init__(self, json: str | None = None, html: str | None = None, budget: int | str | None = None,
                 summary: bool = False, **options: Any) -> None:
        self.paths = {"json": json, "html": html}
        self.summary = summary
        self.options = {"budget": budget, **options}
        self.report: Report | None = None
        self._cm: AbstractContextManager[Any] | None = None
        self._session: Any = None
        self._mark = (0, 0)  # steps and warnings at the last period's end
        self._peak = 0  # the highest step peak since the last period's end, polled
        self._polled = 0  # the steps already polled

    @property
    def running(self) -> bool:
        return self._session is not None

    def start(self) -> None:
        """Start a session (a running one is stopped first: its report is written)."""
        if self.running:
            self.stop()
        site = user_frame_site(2)
        name = self.options.get("name") or (site[0] if site else "<callback>")
        cm = track(**{**self.options, "name": name})
        try:
            self._session = cm.__enter__()
        except Exception as e:
            print(f"memprof: could not start profiling: {e}", file=sys.stderr)
            return
        self._cm = cm
        self.report = None
        self._mark, self._peak, self._polled = (0, 0), 0, 0

    def poll(self) -> None:
        """Note the peak of the steps since the last poll (cheap: only the new steps are read)."""
        if self._session is None:
            return
        try:
            self._peak = max(self._peak, self._session.steps_peak(since=self._polled))
            self._polled = self._session.progress().steps
        except Exception:
            pass

    def period(self) -> Period | None:
        """The steps, peak and new findings since the last period's end (None: not running)."""
        if self._session is None:
            return None
        self.poll()
        try:
            p = self._session.progress()
        except Exception:
            return None
        steps, warnings = self._mark
        out = Period(steps=p.steps - steps, peak_bytes=self._peak, new_findings=max(p.warnings - warnings, 0))
        self._mark, self._peak = (p.steps, p.warnings), 0
        return out

    def stop(self, exc: BaseException | None = None, findings: list[Finding] | None = None) -> Report | None:
        """Stop the session (with the run's exception, if it raised), add ``findings``, write the files."""
        cm, session = self._cm, self._session
        self._cm = self._session = None
        self._polled = 0
        if cm is None or session is None:
            return self.report
        try:
            if exc is None:
                cm.__exit__(None, None, None)
            else:
                cm.__exit__(type(exc), exc, exc.__traceback__)
        except Exception as e:
            print(f"memprof: profiling did not stop cleanly: {e}", file=sys.stderr)
        report = session.report
        del session  # it holds the run's exception: the user's frames and tensors
        if report is None:
            return None
        if findings:
            known = {(f.kind.value, f.file, f.line) for f in report.findings}
            report.findings.extend(f for f in findings if (f.kind.value, f.file, f.line) not in known)
            report.findings.sort(key=lambda f: (f.severity.rank, f.step or 0))
        self.report = report
        try:
            write_outputs(report, self.paths, summary=self.summary)
        except Exception as e:  # never an error in the user's training
            print(f"memprof: could not write the report: {e}", file=sys.stderr)
        return report
