"""Report -> the contract's JSON (reading it back is :mod:`memprof.model.decode`).

Written against the report's shape, not its classes (any dataclass section with ``items()``), so
that :class:`~memprof.model.report.Report` can use it without an import cycle."""

from __future__ import annotations

import enum
import json
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memprof.model.findings import Finding, Recommendation

if TYPE_CHECKING:
    from memprof.model.report import AdvisorModel, Report, StepRecord, TensorRecord


def plain(value: Any) -> Any:
    """``value`` as JSON types: enums by their value, tuples as lists, dict keys as strings."""
    if isinstance(value, dict):
        return {str(k.value if hasattr(k, "value") else k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, enum.Enum):  # before str: str(Severity.ERROR) is 'Severity.ERROR', not 'error'
        return plain(value.value)
    if is_dataclass(value) and hasattr(value, "items"):  # a report section (TensorRecord, OomReport, ...)
        return section_dict(value)
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):
        return value.value
    if isinstance(value, str):
        return str(value)
    return value


def section_dict(section: Any) -> dict[str, Any]:
    return {k: plain(v) for k, v in section.items()}


def step_dict(s: StepRecord) -> dict[str, Any]:
    """One step: the contract's fields, and its end by category where a detailed step measured it."""
    d = asdict(s)
    if d.get("breakdown") is None:
        d.pop("breakdown", None)
    return d


def _tensor_dict(t: TensorRecord) -> dict[str, Any]:
    d: dict[str, Any] = {k: plain(getattr(t, k)) for k in
                         ("bytes", "shape", "dtype", "category", "module", "created_step", "file", "line")}
    d.update((k, plain(v)) for k, v in t.items() if k not in d)
    return d


def finding_dict(f: Finding) -> dict[str, Any]:
    d: dict[str, Any] = {
        "kind": f.kind.value,
        "severity": f.severity.value,
        "file": f.file,
        "line": f.line,
        "variable": f.variable,
        "bytes": int(f.bytes),
        "message": f.message,
        "advice": f.advice,
        "step": f.step,
    }
    if f.ranks is not None:
        d["ranks"] = list(f.ranks)
    if f.extra:
        d["extra"] = plain(f.extra)
    return d



def _recommendation_dict(r: Recommendation) -> dict[str, Any]:
    d: dict[str, Any] = {
        "kind": r.kind.value,
        "message": r.message,
        "predicted_peak_bytes": r.predicted_peak_bytes,
    }
    if r.current is not None:
        d["current"] = plain(r.current)
    if r.suggested is not None:
        d["suggested"] = plain(r.suggested)
    if r.budget_bytes is not None:
        d["budget_bytes"] = r.budget_bytes
    if r.extra:
        d["extra"] = plain(r.extra)
    return d


def advisor_dict(a: AdvisorModel) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if a.budget is not None:
        b = a.budget
        d["budget"] = {"bytes": b.bytes, "source": b.source, **b.parts, **({"note": b.note} if b.note else {})}
    if a.batch is not None:
        batch = asdict(a.batch)
        batch["points"] = [list(p) for p in a.batch.points]
        if batch["largest_batch_size"] is None:
            del batch["largest_batch_size"]
        d["batch"] = batch
    d.update(plain(a.figures))
    if a.replay is not None:
        replay = asdict(a.replay)
        if not replay["errors"]:
            del replay["errors"]
        d["replay"] = replay
    if a.errors:
        d["errors"] = list(a.errors)
    return d


def report_to_dict(report: Report) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schema": report.schema,
        "script": report.script,
        "argv": list(report.argv),
        "status": report.status.value,
        "device": asdict(report.device),
        "peak_bytes": int(report.peak_bytes),
        "steps": [step_dict(s) for s in report.steps],
        "breakdown_at_peak": report.breakdown_at_peak.as_dict(),
        "modules": [asdict(m) for m in report.modules],
        "findings": [finding_dict(f) for f in report.findings],
        "recommendations": [_recommendation_dict(r) for r in report.recommendations],
        "exit_code": report.exit_code,
        "error": report.error,
        "duration_seconds": round(report.duration_seconds, 4),
        "memprof_version": report.memprof_version,
        "largest_tensors": [_tensor_dict(t) for t in report.largest_tensors],
        "warnings": list(report.warnings),
    }
    if report.ranks is not None:
        d["ranks"] = [
            {"rank": r.rank, "peak_bytes": r.peak_bytes, "steps": [step_dict(s) for s in r.steps]} for r in report.ranks
        ]
    if report.cuda is not None:
        d["cuda"] = section_dict(report.cuda)
    if report.oom is not None:
        oom = section_dict(report.oom)
        if report.oom.largest_allocations is not None:
            oom["largest_allocations"] = [_tensor_dict(t) for t in report.oom.largest_allocations]
        d["oom"] = oom
    if report.advisor is not None:
        d["advisor"] = advisor_dict(report.advisor)
    if report.steps_kept is not None:
        d["steps_kept"] = section_dict(report.steps_kept)
    return d


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write a whole file atomically: a crash half-way never leaves a truncated file behind."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".memprof-", suffix=target.suffix, dir=str(target.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        # mkstemp makes the file private (0600); a report is an ordinary file others may read.
        os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_report(report: Report, path: str | os.PathLike[str]) -> None:
    write_atomic(path, json.dumps(report_to_dict(report), indent=2) + "\n")
