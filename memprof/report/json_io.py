"""Report <-> JSON (the contract's shape). Unknown keys are kept out; missing ones get defaults."""

from __future__ import annotations

import enum
import json
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from memprof.errors import MemprofError
from memprof.report.model import (
    Breakdown,
    DeviceInfo,
    Finding,
    FindingKind,
    ModuleRecord,
    RankReport,
    Recommendation,
    RecommendationKind,
    Report,
    Severity,
    Status,
    StepRecord,
)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k.value if hasattr(k, "value") else k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):  # before str: str(Severity.ERROR) is 'Severity.ERROR', not 'error'
        return _plain(value.value)
    if hasattr(value, "value") and not isinstance(value, (int, float, str)):
        return value.value
    if isinstance(value, str):
        return str(value)
    return value


def _finding_dict(f: Finding) -> dict[str, Any]:
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
        d["extra"] = _plain(f.extra)
    return d


def _recommendation_dict(r: Recommendation) -> dict[str, Any]:
    d: dict[str, Any] = {
        "kind": r.kind.value,
        "message": r.message,
        "predicted_peak_bytes": r.predicted_peak_bytes,
    }
    if r.current is not None:
        d["current"] = _plain(r.current)
    if r.suggested is not None:
        d["suggested"] = _plain(r.suggested)
    if r.budget_bytes is not None:
        d["budget_bytes"] = r.budget_bytes
    if r.extra:
        d["extra"] = _plain(r.extra)
    return d


def report_to_dict(report: Report) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schema": report.schema,
        "script": report.script,
        "argv": list(report.argv),
        "status": report.status.value,
        "device": asdict(report.device),
        "peak_bytes": int(report.peak_bytes),
        "steps": [asdict(s) for s in report.steps],
        "breakdown_at_peak": report.breakdown_at_peak.as_dict(),
        "modules": [asdict(m) for m in report.modules],
        "findings": [_finding_dict(f) for f in report.findings],
        "recommendations": [_recommendation_dict(r) for r in report.recommendations],
        "exit_code": report.exit_code,
        "error": report.error,
        "duration_seconds": round(report.duration_seconds, 4),
        "memprof_version": report.memprof_version,
        "largest_tensors": _plain(report.largest_tensors),
        "warnings": list(report.warnings),
    }
    if report.ranks is not None:
        d["ranks"] = [
            {"rank": r.rank, "peak_bytes": r.peak_bytes, "steps": [asdict(s) for s in r.steps]} for r in report.ranks
        ]
    for key in ("cuda", "oom", "advisor"):
        value = getattr(report, key)
        if value is not None:
            d[key] = _plain(value)
    return d


def _build(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def report_from_dict(d: dict[str, Any]) -> Report:
    if not isinstance(d, dict) or not str(d.get("schema", "")).startswith("memprof.report/"):
        raise MemprofError("not a memprof report (no 'schema': 'memprof.report/1')")
    findings = []
    for f in d.get("findings", []):
        f = dict(f)
        f["kind"] = FindingKind(f["kind"])
        f["severity"] = Severity(f.get("severity", "warning"))
        findings.append(_build(Finding, f))
    recs = []
    for r in d.get("recommendations", []):
        r = dict(r)
        r["kind"] = RecommendationKind(r["kind"])
        recs.append(_build(Recommendation, r))
    ranks = None
    if d.get("ranks") is not None:
        ranks = [
            RankReport(rank=r["rank"], peak_bytes=r["peak_bytes"], steps=[_build(StepRecord, s) for s in r.get("steps", [])])
            for r in d["ranks"]
        ]
    return Report(
        schema=d["schema"],
        script=d.get("script", ""),
        argv=list(d.get("argv", [])),
        status=Status(d.get("status", "ok")),
        device=_build(DeviceInfo, d.get("device", {})),
        peak_bytes=int(d.get("peak_bytes", 0)),
        steps=[_build(StepRecord, s) for s in d.get("steps", [])],
        breakdown_at_peak=Breakdown.from_mapping(d.get("breakdown_at_peak", {})),
        modules=[_build(ModuleRecord, m) for m in d.get("modules", [])],
        findings=findings,
        recommendations=recs,
        ranks=ranks,
        exit_code=d.get("exit_code"),
        error=d.get("error"),
        duration_seconds=float(d.get("duration_seconds", 0.0)),
        memprof_version=d.get("memprof_version", ""),
        cuda=d.get("cuda"),
        oom=d.get("oom"),
        largest_tensors=list(d.get("largest_tensors", [])),
        warnings=list(d.get("warnings", [])),
        advisor=d.get("advisor"),
    )


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


def load_report(path: str | os.PathLike[str]) -> Report:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise MemprofError(f"cannot read report {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MemprofError(f"{path} is not JSON: {e}") from None
    return report_from_dict(data)
