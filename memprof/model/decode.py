"""The contract's JSON -> Report. Unknown keys of a section are kept in its ``extra``; missing
ones get defaults; a kind this version does not know is kept as it is."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from memprof.model.findings import Finding, FindingKind, Recommendation, RecommendationKind, Severity
from memprof.model.report import (
    AdvisorModel,
    BatchFigures,
    Breakdown,
    Budget,
    CudaStats,
    DeviceInfo,
    ModuleRecord,
    OomReport,
    RankReport,
    ReplayFigures,
    Report,
    Status,
    StepRecord,
    StepsKept,
    TensorRecord,
)


class ReportFormatError(ValueError):
    """The data is not a memprof report."""


def advisor_from_dict(d: dict[str, Any]) -> AdvisorModel:
    out = AdvisorModel()
    rest = dict(d)
    budget = rest.pop("budget", None)
    if isinstance(budget, dict) and isinstance(budget.get("bytes"), int):
        parts = {k: v for k, v in budget.items() if k not in ("bytes", "source", "note") and isinstance(v, int)}
        out.budget = Budget(bytes=budget["bytes"], source=str(budget.get("source", "")), parts=parts,
                            note=str(budget.get("note", "")))
    batch = rest.pop("batch", None)
    if isinstance(batch, dict) and "reference_batch_size" in batch:
        known = {f.name for f in fields(BatchFigures)}
        values = {k: v for k, v in batch.items() if k in known}
        values["points"] = [(int(p[0]), int(p[1])) for p in values.get("points", [])]
        out.batch = BatchFigures(**values)
    replay = rest.pop("replay", None)
    if isinstance(replay, dict):
        known = {f.name for f in fields(ReplayFigures)}
        out.replay = ReplayFigures(**{k: v for k, v in replay.items() if k in known})
    errors = rest.pop("errors", None)
    out.errors = [str(e) for e in errors] if isinstance(errors, list) else []
    out.figures = {k: v for k, v in rest.items() if isinstance(v, dict)}
    return out


def _build(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def tensor_from_dict(d: dict[str, Any]) -> TensorRecord:
    record: TensorRecord = TensorRecord.from_dict(d)
    return record


def oom_from_dict(d: dict[str, Any]) -> OomReport:
    raw = d.get("largest_allocations")
    oom: OomReport = OomReport.from_dict({k: v for k, v in d.items() if k != "largest_allocations"})
    if isinstance(raw, list):
        oom.largest_allocations = [tensor_from_dict(t) for t in raw if isinstance(t, dict)]
    return oom


def report_from_dict(d: dict[str, Any]) -> Report:
    if not isinstance(d, dict) or not str(d.get("schema", "")).startswith("memprof.report/"):
        raise ReportFormatError("not a memprof report (no 'schema': 'memprof.report/1')")
    findings = []
    for f in d.get("findings", []):
        f = dict(f)
        f["kind"] = FindingKind(f["kind"])
        f["severity"] = Severity.parse(f.get("severity"))
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
    cuda, oom, advisor, kept = d.get("cuda"), d.get("oom"), d.get("advisor"), d.get("steps_kept")
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
        cuda=CudaStats.from_dict(cuda) if isinstance(cuda, dict) else None,
        oom=oom_from_dict(oom) if isinstance(oom, dict) else None,
        largest_tensors=[tensor_from_dict(t) for t in d.get("largest_tensors", []) if isinstance(t, dict)],
        warnings=list(d.get("warnings", [])),
        advisor=advisor_from_dict(advisor) if isinstance(advisor, dict) else None,
        steps_kept=StepsKept.from_dict(kept) if isinstance(kept, dict) and isinstance(kept.get("total"), int) else None,
    )
