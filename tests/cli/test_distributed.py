"""`--nproc-per-node`: a torchrun job on CPU (gloo), one report across ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memprof.cli.distributed import merge_reports
from memprof.model import Finding, FindingKind, Report, Severity, Status
from tests.conftest import ROOT, run_memprof


def _rank(report: Report, rank: int) -> Report:
    report._rank = rank  # type: ignore[attr-defined]
    return report


def test_merge_takes_the_largest_rank_and_lists_ranks_per_finding() -> None:
    f = Finding(kind=FindingKind.ACCUMULATED_TENSOR, severity=Severity.WARNING, message="m", file="/a.py", line=3,
                variable="x", bytes=10)
    g = Finding(kind=FindingKind.ACCUMULATED_TENSOR, severity=Severity.WARNING, message="m", file="/a.py", line=3,
                variable="x", bytes=30)
    r0 = _rank(Report(script="a.py", peak_bytes=100, findings=[f]), 0)
    r1 = _rank(Report(script="a.py", peak_bytes=300, findings=[g], status=Status.OOM), 1)
    merged = merge_reports([r1, r0])
    assert merged.peak_bytes == 300 and merged.status is Status.OOM
    assert merged.ranks is not None and [r.rank for r in merged.ranks] == [0, 1]
    assert len(merged.findings) == 1 and merged.findings[0].ranks == [0, 1] and merged.findings[0].bytes == 30


@pytest.mark.slow
def test_torchrun_job_gives_one_report(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run_memprof("run", "-q", "--json", str(out), "--nproc-per-node", "2",
                       str(ROOT / "tests" / "scripts" / "ddp_train.py"), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"rank 0 world 2" in proc.stdout and b"rank 1 world 2" in proc.stdout
    report = json.loads(out.read_text())
    assert [r["rank"] for r in report["ranks"]] == [0, 1]
    assert report["peak_bytes"] == max(r["peak_bytes"] for r in report["ranks"])
    assert all(len(r["steps"]) == 6 for r in report["ranks"])
    kept = [f for f in report["findings"] if f["variable"] == "kept"]
    assert kept and kept[0]["ranks"] == [1]  # only rank 1 keeps its outputs
