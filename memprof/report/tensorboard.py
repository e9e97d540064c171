"""A report as TensorBoard event files: per-step memory scalars and the findings as text.

One event file in DIR, readable by TensorBoard (``tensorboard --logdir DIR``) and its
``EventAccumulator``. Scalars, with the step index as TensorBoard's step:

- ``memory/peak_bytes`` and ``memory/end_bytes``: every step kept in the report;
- ``memory/end/<category>_bytes`` (parameters, gradients, optimizer state, activations, other):
  the steps measured in detail, where memprof knows the end by category;

Text: ``memprof/findings`` (each finding, its line, its fix) and ``memprof/recommendations`` (each
with its predicted peak), as Markdown, at the run's last step.

Known limitations: a long run's middle steps are the report's downsampled ones (each bucket's
extremes), not every step; TensorBoard needs the ``tensorboard`` package (``memprof[tensorboard]``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from memprof.errors import MemprofError
from memprof.model.report import Report
from memprof.report.format import sorted_findings
from memprof.units import fmt_bytes


def _tensorboard() -> tuple[Any, Any, Any, Any]:
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.text.summary import text_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise MemprofError("--tensorboard needs TensorBoard: pip install 'memprof[tensorboard]' "
                           "(or pip install tensorboard)") from None
    return event_pb2, summary_pb2, text_pb, EventFileWriter


def findings_markdown(report: Report) -> str:
    rows = ["| severity | kind | where | variable | what | fix |", "| --- | --- | --- | --- | --- | --- |"]
    for f in sorted_findings(report.findings):
        where = f"{os.path.basename(f.file)}:{f.line}" if f.file and f.line else ""
        cells = [f.severity.value, f.kind.value, where, f.variable or "", f.message, f.advice or ""]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows) if report.findings else "No memory problems found."


def recommendations_markdown(report: Report) -> str:
    lines = [f"- **{r.kind.value}**: {r.message}"
             + (f" (predicted peak {fmt_bytes(r.predicted_peak_bytes)})" if r.predicted_peak_bytes else "")
             for r in report.recommendations]
    return "\n".join(lines) if lines else "No recommendations."


def write_tensorboard(report: Report, path: str) -> None:
    """Write ``report`` as one TensorBoard event file in the folder ``path`` (made if missing)."""
    event_pb2, summary_pb2, text_pb, writer_class = _tensorboard()
    os.makedirs(path, exist_ok=True)
    writer = writer_class(path, filename_suffix=".memprof")
    # Wall times from the steps' durations, ending now (the report keeps no clock times).
    t = time.time() - sum(s.seconds for s in report.steps)

    def scalars(step: int, wall: float, values: dict[str, float]) -> None:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                                             for k, v in values.items()])
        writer.add_event(event_pb2.Event(wall_time=wall, step=step, summary=summary))

    try:
        for s in report.steps:
            t += s.seconds
            values: dict[str, float] = {"memory/peak_bytes": s.peak_bytes, "memory/end_bytes": s.end_bytes}
            for category, n in (s.breakdown or {}).items():
                values[f"memory/end/{category}_bytes"] = n
            scalars(s.index, t, values)
        last = report.steps[-1].index if report.steps else 0
        for tag, text in (("memprof/findings", findings_markdown(report)),
                          ("memprof/recommendations", recommendations_markdown(report))):
            writer.add_event(event_pb2.Event(wall_time=t, step=last, summary=text_pb(tag, text)))
    finally:
        writer.close()
