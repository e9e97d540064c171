"""The live state a profiled run publishes for ``memprof monitor`` and ``--tui``."""

from __future__ import annotations

import collections
import os
import time
from typing import TYPE_CHECKING, Any

from memprof.model.categories import CATEGORIES
from memprof.model.codec import finding_dict, report_to_dict

if TYPE_CHECKING:
    from memprof.live.state import LiveSample
    from memprof.session.core import Session


# How often the live state is rebuilt (at a boundary): 10 times a second while someone reads it
# (`memprof monitor`, `--tui`) or has just connected, else every IDLE_PERIOD seconds, so that a
# reader who connects finds a recent state, and a run nobody watches pays ~0.05% for it, not ~1%.
READ_PERIOD = 0.1
IDLE_PERIOD = 2.0


class Publisher:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._channel: Any = None  # memprof.live's publisher, when started
        self._accepted = 0  # the channel's readers accepted, at the last publish
        self._published_upto = 0
        self._published_t = 0.0
        self._samples: collections.deque[LiveSample] = collections.deque(maxlen=300)
        self._wall0 = 0.0

    def start(self) -> None:
        self._wall0 = time.time()
        try:
            from memprof.live.publisher import LivePublisher

            self._channel = LivePublisher.start({"script": self.session.config.script})
        except Exception as e:
            self._channel = None
            if os.environ.get("MEMPROF_LIVE_SOCKET"):
                self.session.warn(f"live channel unavailable: {e}")

    def close(self) -> None:
        if self._channel is not None:
            try:
                self._channel.close()
            except Exception:
                pass

    def due(self, since: float) -> bool:
        """Whether a state is due, ``since`` seconds after the last one (see READ_PERIOD)."""
        channel = self._channel
        if channel is None:
            return False
        if since >= IDLE_PERIOD:
            return True
        return since >= READ_PERIOD and (channel.clients > 0 or channel.accepted != self._accepted)

    def publish(self, final: bool = False) -> None:
        if self._channel is None:
            return
        self._accepted = self._channel.accepted
        s = self.session
        try:
            from memprof.live.state import LiveSample, LiveState

            history = s.steps.history
            # Only the iterations new since the last publish are walked: cost independent of run length.
            rows = list(history.recent(self._published_upto))  # the tail's: steps older are left out,
            t = history.seconds - sum(r[1] for r in rows)  # not their time
            for index, seconds, peak in rows:
                t += seconds
                self._samples.append(LiveSample(t=round(t, 4), bytes=peak, step=index))
            self._published_t = t
            self._published_upto = history.count
            samples = list(self._samples)
            last = history.last()
            dev = s.cuda.device() if s.cuda.active else None
            device: dict[str, Any] = {"type": "cuda" if s.cuda.active else "cpu"}
            if dev is not None:
                device.update(name=dev[0], total_bytes=dev[1])
            report = s.report
            tracker = s.tracker
            state = LiveState(
                pid=os.getpid(), script=s.config.script, argv=list(s.config.argv), started_at=self._wall0,
                status=report.status.value if (final and report) else "running",
                step=history.count, phase=s.steps.phase, batch_size=last.batch_size if last else None,
                current_bytes=last.end_bytes if last else tracker.live,
                peak_bytes=s.peak_so_far, budget_bytes=s.config.budget_bytes,
                device=device, peak_step=tracker.peak_step,
                breakdown=dict(zip((c.value for c in CATEGORIES), tracker.peak_cat, strict=True)),
                samples=samples, step_marks=[x.t for x in samples], report_path=s.config.report_path,
            )
            if report is not None:
                d = report_to_dict(report)
                state.modules = d["modules"][:50]
                state.findings = d["findings"]
                state.recommendations = d["recommendations"]
                state.peak_bytes = report.peak_bytes
            else:
                state.modules = [
                    {"name": m.name, "type": m.type, "parameter_bytes": m.parameter_bytes,
                     "activation_bytes": m.activation_bytes, "gradient_bytes": m.gradient_bytes, "calls": m.calls}
                    for m in sorted(s.modules.records(), key=lambda m: -m.activation_bytes)[:50]
                ]
                state.findings = [finding_dict(f) for f in s.doctor.findings]
            self._channel.publish(state)
        except Exception as e:
            s.warn(f"live channel: {e!r}")
