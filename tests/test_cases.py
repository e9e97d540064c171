"""The doctor and the peak, on whole scripts: the shared cases and our own (tests/cases).

The shared cases' score runs in the default tier (the end-to-end check that matters most); our
own cases and the peaks against ground truth are in the slow tier.

The shared scorer runs `memprof run --json` on each case; recall and precision must be 1.00 and
every expected variable named. The peak must match the independent ground truth within 2%.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_memprof

OWN_CASES = ROOT / "tests" / "cases"


def _score(shared: Path, cases: Path, tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "memprof"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m memprof "$@"\n')
    launcher.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               MEMPROF_LIVE_DIR=str(tmp_path / "live"), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(shared / "tools" / "score_cases.py"), str(cases)],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_shared_cases_score_full_marks(shared: Path, tmp_path: Path) -> None:
    summary = _score(shared, shared / "cases", tmp_path)
    assert "recall 7/7 = 1.00" in summary and "precision 1.00" in summary, summary
    assert "variables named 5/5" in summary, summary


@pytest.mark.slow
def test_own_cases_score_full_marks(shared: Path, tmp_path: Path) -> None:
    manifest = json.loads((OWN_CASES / "expected.json").read_text())
    expected = sum(len(c["expect"]) for c in manifest["cases"])
    named = sum(1 for c in manifest["cases"] for e in c["expect"] if e.get("variable"))
    summary = _score(shared, OWN_CASES, tmp_path)
    assert f"recall {expected}/{expected} = 1.00" in summary and "precision 1.00" in summary, summary
    assert f"variables named {named}/{named}" in summary, summary


PEAK_CASES = [
    ("loss_history.py", ["--steps", "6"]),
    ("eval_no_grad.py", ["--epochs", "1"]),
    ("keep_outputs.py", ["--steps", "16"]),
    ("memory_bank.py", ["--steps", "8"]),
    ("lingering_logits.py", ["--steps", "4"]),
    ("clean_train.py", ["--epochs", "1"]),
    ("int_metric.py", ["--steps", "12"]),
    ("retain_graph.py", ["--steps", "10"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("script, args", PEAK_CASES)
def test_peak_matches_ground_truth_and_stdout_is_unchanged(shared: Path, tmp_path: Path, script: str,
                                                         args: list[str]) -> None:
    path = shared / "cases" / script
    gt_out = tmp_path / "gt.json"
    gt = subprocess.run([sys.executable, str(shared / "tools" / "groundtruth.py"), str(path), *args],
                        capture_output=True, env=dict(os.environ, GROUNDTRUTH_OUT=str(gt_out)), timeout=600)
    assert gt.returncode == 0, gt.stderr
    prof = run_memprof("run", "-q", "--json", str(tmp_path / "r.json"), str(path), *args, cwd=tmp_path)
    assert prof.returncode == 0, prof.stderr
    assert prof.stdout == gt.stdout  # same script output with and without memprof
    truth = json.loads(gt_out.read_text())["peak_bytes"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert abs(report["peak_bytes"] - truth) <= 0.02 * truth, (report["peak_bytes"], truth)
    assert sum(report["breakdown_at_peak"].values()) == report["peak_bytes"]
    assert report["steps"] and all(s["peak_bytes"] >= s["end_bytes"] for s in report["steps"] if s["detailed"])
    assert report["modules"]
