"""Small text helpers shared by the screens and by ``memprof monitor --once`` (no Textual here)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from typing import Any

from memprof.hw.gpu import GpuStatus
from memprof.live.state import LiveState
from memprof.units import fmt_bytes

SEVERITY_ICON = {"error": "✖", "warning": "▲", "info": "●"}
STATUS_LABEL = {
    "running": "RUNNING", "ok": "FINISHED", "error": "FAILED", "oom": "OUT OF MEMORY", "interrupted": "INTERRUPTED",
}


def bar(fraction: float | None, width: int) -> str:
    """``████▌░░░░`` for a fraction in [0, 1] (clamped); blank-filled when unknown."""
    if fraction is None:
        return "░" * width
    f = min(max(fraction, 0.0), 1.0)
    eighths = int(round(f * width * 8))
    full, rest = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[rest] if rest and full < width else ""
    return ("█" * full + partial).ljust(width, "░")[:width]


def pct(part: int | float | None, whole: int | float | None) -> str:
    if part is None or not whole:
        return "—"
    return f"{100.0 * part / whole:.0f}%"


def duration(seconds: float) -> str:
    s = max(int(seconds), 0)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


def command_line(state: LiveState) -> str:
    """``loss_history.py --steps 3000`` (script by file name)."""
    return " ".join([os.path.basename(state.script) or state.script, *(shlex.quote(a) for a in state.argv)])


def where(finding: dict[str, Any]) -> str:
    """``train.py:42`` for a finding (file name only), or ``—``."""
    file = finding.get("file")
    if not file:
        return "—"
    line = finding.get("line")
    return f"{os.path.basename(file)}:{line}" if line else os.path.basename(file)


def budget_of(state: LiveState) -> tuple[int | None, str]:
    """What current and peak are measured against: the budget, else the device's capacity."""
    if state.budget_bytes:
        return state.budget_bytes, "budget"
    total = state.device.get("total_bytes") if state.device else None
    if total:
        return int(total), "device"
    return None, ""


def diagnoses(state: LiveState) -> list[dict[str, Any]]:
    return [f for f in state.findings if f.get("severity") in ("error", "warning")]


def top_finding(state: LiveState) -> str:
    if not state.findings:
        return ""
    order = {"error": 0, "warning": 1, "info": 2}
    f = min(state.findings, key=lambda f: (order.get(str(f.get("severity")), 3), -int(f.get("bytes") or 0)))
    var = f" {f['variable']}" if f.get("variable") else ""
    return f"{f.get('kind', '?')}{var} @ {where(f)}"


def finding_fix(finding: dict[str, Any]) -> str:
    return str(finding.get("advice") or finding.get("message") or "")


def recommendation_line(rec: dict[str, Any]) -> str:
    kind = str(rec.get("kind", "?"))
    head = kind
    if rec.get("current") is not None and rec.get("suggested") is not None:
        head += f" {rec['current']} → {rec['suggested']}"
    predicted = rec.get("predicted_peak_bytes")
    tail = f" (peak ≈ {fmt_bytes(predicted)})" if predicted else ""
    msg = str(rec.get("message") or "")
    return f"{head}{tail}: {msg}" if msg else head + tail


def table(rows: Sequence[Sequence[str]], header: Sequence[str], right: Sequence[int] = ()) -> list[str]:
    """Plain-text table: columns padded to their widest cell; ``right`` columns right-aligned."""
    cells = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = []
    for r in cells:
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        out.append("  ".join(padded).rstrip())
    return out


def plain_report(status: GpuStatus, runs: Sequence[LiveState], live_directory: str) -> str:
    """What ``memprof monitor --once`` prints: the GPUs, their processes, and the memprof runs."""
    lines: list[str] = []
    if not status.available or not status.devices:
        lines.append(status.summary)
    else:
        lines.append(f"GPUs: {status.summary}" + (f", driver {status.driver}" if status.driver else ""))
        rows = [
            [str(d.index), d.name, fmt_bytes(d.memory_used_bytes), fmt_bytes(d.memory_total_bytes),
             pct(d.memory_used_bytes, d.memory_total_bytes),
             "—" if d.utilization_percent is None else f"{d.utilization_percent:.0f}%"]
            for d in status.devices
        ]
        lines += ["  " + s for s in table(rows, ["GPU", "NAME", "USED", "TOTAL", "MEM", "UTIL"], right=(2, 3, 4, 5))]
        procs = [
            [str(d.index), str(p.pid), p.name, fmt_bytes(p.used_bytes)]
            for d in status.devices for p in d.processes
        ]
        lines.append("")
        if procs:
            lines.append("GPU processes:")
            lines += ["  " + s for s in table(procs, ["GPU", "PID", "PROCESS", "MEMORY"], right=(1, 3))]
        else:
            lines.append("GPU processes: none")
    lines.append("")
    if not runs:
        lines.append(f"memprof runs: none (looked in {live_directory})")
    else:
        lines.append(f"memprof runs: {len(runs)}")
        rows = [
            [str(s.pid), command_line(s)[:48], s.status, str(s.step),
             "—" if s.batch_size is None else str(s.batch_size), fmt_bytes(s.current_bytes), fmt_bytes(s.peak_bytes),
             str(len(diagnoses(s))), top_finding(s)]
            for s in runs
        ]
        header = ["PID", "SCRIPT", "STATUS", "STEP", "BATCH", "CURRENT", "PEAK", "FINDINGS", "TOP FINDING"]
        lines += ["  " + s for s in table(rows, header, right=(0, 3, 4, 5, 6, 7))]
    return "\n".join(lines)
