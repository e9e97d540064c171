"""``memprof run --nproc-per-node N``: a torchrun job, one report across ranks.

torch.distributed's own launcher starts N processes of ``memprof run`` (so each rank is profiled
as a normal run); each writes its report to a private folder; the parent merges them. The top-level
figures are those of the rank with the largest peak, each finding lists the ranks it was seen on.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from memprof.cli.base import output_paths
from memprof.errors import MemprofError
from memprof.model import Finding, RankReport, Report, Status
from memprof.report.json_io import load_report
from memprof.report.outputs import write_outputs
from memprof.runner import Target


def rank_report_path(rank_dir: str) -> str | None:
    """Where this process writes its report when it is one rank of a job (None: not a rank)."""
    rank = os.environ.get("RANK")
    return os.path.join(rank_dir, f"rank-{int(rank)}.json") if rank is not None else None


def merge_reports(reports: list[Report]) -> Report:
    if not reports:
        raise MemprofError("no rank wrote a report")
    reports = sorted(reports, key=lambda r: _rank_of(r))
    top = max(reports, key=lambda r: r.peak_bytes)
    merged = Report(**{k: getattr(top, k) for k in top.__dataclass_fields__})  # shallow copy
    merged.ranks = [RankReport(rank=_rank_of(r), peak_bytes=r.peak_bytes, steps=r.steps) for r in reports]
    seen: dict[tuple[str, str | None, int | None, str | None], Finding] = {}
    findings: list[Finding] = []
    for r in reports:
        for f in r.findings:
            key = (f.kind.value, f.file, f.line, f.variable)
            if key in seen:
                ranks = seen[key].ranks or []
                if _rank_of(r) not in ranks:
                    ranks.append(_rank_of(r))
                seen[key].ranks = ranks
                seen[key].bytes = max(seen[key].bytes, f.bytes)
            else:
                f.ranks = [_rank_of(r)]
                seen[key] = f
                findings.append(f)
    merged.findings = findings
    worst = [s for s in (Status.OOM, Status.ERROR, Status.INTERRUPTED) if any(r.status is s for r in reports)]
    merged.status = worst[0] if worst else Status.OK
    merged.warnings = sorted({w for r in reports for w in r.warnings})
    return merged


def _rank_of(report: Report) -> int:
    return int(getattr(report, "_rank", 0))


def run_distributed(ns: argparse.Namespace, target: Target, script_args: list[str]) -> int:
    n = int(ns.nproc_per_node)
    if n < 1:
        raise MemprofError("run: --nproc-per-node must be 1 or more")
    with tempfile.TemporaryDirectory(prefix="memprof-ranks-") as rank_dir:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
               "-m", "memprof", "run", "-q", "--rank-dir", rank_dir, "--detail", ns.detail,
               "--detail-steps", str(ns.detail_steps)]
        if ns.budget:
            cmd += ["--budget", f"{ns.budget}B"]  # bytes, with their unit
        if ns.memory_limit:
            cmd += ["--memory-limit", f"{ns.memory_limit}B"]
        cmd += ["-m", target.module] if target.module else [target.path or ""]
        cmd += script_args
        try:
            code = subprocess.call(cmd)
        except KeyboardInterrupt:
            code = 130
        reports = []
        for p in sorted(Path(rank_dir).glob("rank-*.json")):
            r = load_report(p)
            r._rank = int(p.stem.split("-")[1])  # type: ignore[attr-defined]
            reports.append(r)
        if not reports:
            print("memprof: no rank wrote a report", file=sys.stderr)
            return code or 1
        merged = merge_reports(reports)
        merged.exit_code = code
        write_outputs(merged, output_paths(ns), summary=not ns.quiet)
    return code
