"""The benchmarks run end to end and write their results (timings are not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.slow  # whole benchmark scripts in subprocesses


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_overhead_quick_writes_its_tables(tmp_path: Path) -> None:
    proc = _run(str(BENCH / "overhead.py"), "--quick", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = next(tmp_path.glob("overhead-*-quick.md")).read_text()
    data = json.loads(next(tmp_path.glob("overhead-*-quick.json")).read_text())
    tools = {c["tool"] for c in data["cells"]}
    assert {"memprof", "memprof_full", "torch_profiler", "mem_tracker"} <= tools
    assert all(c["ratios"] for c in data["cells"] if c["tool"].startswith("memprof"))
    assert data["startup"] is not None and data["report"]["steps"] > 0
    assert "| tiny_mlp |" in md and "Start-up" in md and "| budget |" in md
    assert md.strip() in proc.stdout


def test_gpu_check_quick_runs_without_a_gpu_and_says_what_it_skipped(tmp_path: Path) -> None:
    proc = _run(str(BENCH / "gpu_check.py"), "--quick", "--out", str(tmp_path), cwd=tmp_path)
    out = next(tmp_path.glob("gpu-check-*-quick.json"))
    data = json.loads(out.read_text())
    statuses = {r["part"]: r["status"] for r in data["results"]}
    assert proc.returncode == (1 if "fail" in statuses.values() else 0), proc.stderr[-3000:]
    assert "fail" not in statuses.values(), data["results"]
    md = out.with_suffix(".md").read_text()
    assert md.strip() in proc.stdout
    import torch

    if not torch.cuda.is_available():
        skipped = [r for r in data["results"] if r["status"] == "skipped"]
        assert skipped and all(r["detail"] == "skipped: no CUDA" for r in skipped)
        assert {"overhead", "peak", "cases"} <= {r["part"] for r in skipped}
        assert any(r["part"].startswith("oom (CPU rehearsal") and r["status"] == "ok" for r in data["results"])


def test_detail_parts_writes_one_row_per_part(tmp_path: Path) -> None:
    proc = _run(str(BENCH / "detail_parts.py"), "--rounds", "1", "--steps", "5", "--no-floor", "--out", str(tmp_path),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = next(tmp_path.glob("detail-parts-*.md")).read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and " ms |" in line]
    assert len(rows) == 6 and all("ms |" in r.split("|")[-2] + "|" for r in rows)
    assert "--detail full" in md and md.strip() in proc.stdout


def test_long_run_quick_writes_its_tables(tmp_path: Path) -> None:
    proc = _run(str(BENCH / "long_run.py"), "--quick", "--out", str(tmp_path), cwd=tmp_path)
    data = json.loads(next(tmp_path.glob("long-run-*-quick.json")).read_text())
    assert data["memprof"]["report"]["written"] and data["sigterm_after_20000"]["report"]["status"] == "interrupted"
    assert set(data["met"]) == {"report_bytes", "extra_rss_bytes", "sigterm_seconds"}
    assert "| memprof run, SIGTERM |" in next(tmp_path.glob("long-run-*-quick.md")).read_text()
    assert proc.returncode in (0, 1)  # 1: a target missed (timings are not asserted here)
