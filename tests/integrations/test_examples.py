"""The integrations' examples run as their docstrings say (the Lightning and Hugging Face ones are
run by their own tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"


@pytest.mark.slow
def test_the_pytest_example_fails_the_test_that_keeps_its_graph(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "pytest_memory")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    assert "FAILED" in proc.stdout and "test_the_loop_keeps_no_graph" in proc.stdout
    assert "total accumulates the autograd history" in proc.stdout


@pytest.mark.slow
def test_the_tensorboard_and_csv_example_writes_both(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    proc = subprocess.run([sys.executable, str(EXAMPLES / "tensorboard_and_csv.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "40 steps" in proc.stdout
    assert list((tmp_path / "memprof-tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (tmp_path / "memprof-csv").iterdir()) == ["findings.csv", "modules.csv", "steps.csv"]
