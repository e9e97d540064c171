"""What the terminal summary and the HTML report show alike: paths, durations, shares, statuses, and
the figures of the typed sections (the post-mortem, the CUDA allocator), worded once for both."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from memprof.model import Finding, Report, Status
from memprof.model.report import OomReport
from memprof.units import fmt_bytes

OOM_LABELS = {
    "num_ooms": "out-of-memory errors",
    "requested_bytes": "requested",
    "allocated_bytes": "allocated",
    "live_bytes": "live",
    "reserved_bytes": "reserved",
    "limit_bytes": "limit",
    "free_bytes": "free",
    "device_free_bytes": "free on device",
    "total_bytes": "device total",
}
# Shown apart from the figures: as the title, the message and the location.
_OOM_SKIP = {"message", "file", "line", "source"}
_OOM_SOURCES = {"memory-limit": "rehearsed with --memory-limit", "cuda": "the CUDA allocator"}


def display_path(path: str | None, cwd: str | None = None) -> str:
    """``path`` relative to the current directory when that is shorter, else as given."""
    if not path:
        return ""
    try:
        rel = os.path.relpath(path, cwd or os.getcwd())
    except ValueError:  # another drive (Windows)
        return path
    return rel if len(rel) < len(path) else path


def fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds >= 0.1 or seconds == 0 else f"{seconds * 1000:.0f} ms"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def fmt_pct(part: float, whole: float) -> str:
    if whole <= 0:
        return "n/a"
    pct = 100.0 * part / whole
    if pct == 0:
        return "0%"
    if pct < 1:
        return f"{pct:.1f}%"
    return f"{pct:.0f}%"


def fmt_shape(shape: Any) -> str:
    if shape is None:
        return ""
    if isinstance(shape, (list, tuple)):
        return "(" + ", ".join(str(s) for s in shape) + (",)" if len(shape) == 1 else ")")
    return str(shape)


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value)
    return str(value)


def status_text(report: Report) -> str:
    if report.status is Status.OOM:
        return "OUT OF MEMORY"
    if report.status is Status.ERROR:
        return f"error (exit {report.exit_code})" if report.exit_code not in (None, 0) else "error"
    if report.status is Status.INTERRUPTED:
        return "interrupted"
    if report.exit_code not in (None, 0):
        return f"ok (exit {report.exit_code})"
    return "ok"


def device_text(report: Report) -> str:
    dev = report.device
    if dev.type == "cuda":
        where = f"cuda:{dev.index}" if dev.index is not None else "cuda"
        return where if dev.name in ("", where, "cuda") else f"{dev.name} ({where})"
    return dev.name if dev.name and dev.name != dev.type else dev.type


def sorted_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Errors, then warnings, then info; the most bytes first within a severity."""
    return sorted(findings, key=lambda f: (f.severity.rank, -int(f.bytes or 0)))


def reserved_bytes(report: Report) -> tuple[str, int] | None:
    """(label, bytes) of the CUDA allocator's reserved memory, its peak when the report has it."""
    if report.cuda is None:
        return None
    # ``max_reserved_bytes`` and ``reserved`` are keys an importer may write (kept in ``extra``).
    for key, label in (("max_reserved_bytes", "peak reserved"), ("peak_reserved_bytes", "peak reserved"),
                       ("reserved_bytes", "reserved"), ("reserved", "reserved")):
        value = report.cuda.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return label, int(value)
    return None


def has_post_mortem(report: Report) -> bool:
    """Whether the report has an out-of-memory post-mortem to show (an empty section has none)."""
    return report.status is Status.OOM or (report.oom is not None and any(True for _ in report.oom.items()))


def oom_location(report: Report) -> tuple[str | None, int | None]:
    """Where the out-of-memory happened: the post-mortem's own file/line, else the oom finding's."""
    if report.oom is not None and report.oom.file:
        line = report.oom.line
        return str(report.oom.file), line if isinstance(line, int) else None
    for f in report.findings:
        if f.kind.value == "oom" and f.file:
            return f.file, f.line
    return None, None


def oom_source(value: Any) -> str:
    return _OOM_SOURCES.get(str(value), str(value))


def oom_figures(oom: OomReport) -> list[tuple[str, str]]:
    """(label, shown value) of the post-mortem's single figures, in field order, then its extra keys."""
    out = []
    for key, value in oom.items():
        if key in _OOM_SKIP or isinstance(value, (dict, list)) or value is None or value == "":
            continue
        label = OOM_LABELS.get(key, key.replace("_bytes", "").replace("_", " "))
        shown = fmt_bytes(value) if key.endswith("_bytes") and isinstance(value, (int, float)) else fmt_value(value)
        out.append((label, shown))
    return out


def byte_items(value: Any) -> list[tuple[str, int]]:
    """``{name: bytes}`` or ``[{"name"|"module"|"category": ..., "bytes": ...}]`` as sorted pairs."""
    pairs: list[tuple[str, int]] = []
    if isinstance(value, dict):
        pairs = [(str(k), int(v)) for k, v in value.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)]
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("bytes"), (int, float)):
                name = item.get("name") or item.get("module") or item.get("category")
                if name is not None:
                    pairs.append((str(name), int(item["bytes"])))
    return sorted((p for p in pairs if p[1] > 0), key=lambda p: -p[1])
