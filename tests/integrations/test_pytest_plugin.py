"""The pytest plugin, driven through a real pytest run of a small test file (a subprocess: the
plugin loads from the installed entry point, as in a user's suite)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = '''
import pytest
import torch
from torch import nn


def _train(steps, width):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 4))
    opt = torch.optim.Adam(model.parameters())
    for _ in range(steps):
        opt.zero_grad()
        loss = model(torch.randn(32, 64)).sum()
        loss.backward()
        opt.step()
    return model


@pytest.mark.limit_memory("64MiB")
def test_under_the_limit():
    _train(3, 256)


@pytest.mark.limit_memory("2MiB")
def test_over_the_limit():
    model = _train(2, 256)
    kept = []
    for _ in range(8):
        kept.append(torch.zeros(256, 512))  # 512 KiB each: the limit stops the test at the third or fourth
    assert model is not None and len(kept) == 8


@pytest.mark.no_memory_findings
def test_accumulates_the_graph():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    total = 0
    for _ in range(8):
        opt.zero_grad()
        loss = model(torch.randn(32, 64)).pow(2).mean()
        loss.backward()
        opt.step()
        total = total + loss
    assert total.item() > 0


@pytest.mark.no_memory_findings
def test_clean_loop():
    _train(8, 64)


def test_unmarked():
    _train(2, 32)
'''


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_suite.py").write_text(SUITE)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *args,
                           str(tmp_path / "test_suite.py")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_markers_fail_with_the_breakdown_and_findings_and_pass_otherwise(tmp_path: Path) -> None:
    proc = _pytest(tmp_path, "--memprof", "--memprof-top", "3")
    out = proc.stdout
    assert proc.returncode == 1, out
    assert re.search(r"2 failed, 3 passed", out), out
    failed = set(re.findall(r"FAILED \S+::(\w+)", out))
    assert failed == {"test_over_the_limit", "test_accumulates_the_graph"}, out
    # The limit's failure: what held memory when the test passed the limit, and the tensors kept,
    # at the line that made them.
    line = next(i for i, text in enumerate(SUITE.splitlines(), 1) if "kept.append(torch.zeros(256, 512))" in text)
    assert re.search(rf"the test was limited to 2.00 MiB: with 1\.\d\d MiB held, it asked for 512 KiB more "
                     rf"at \S*test_suite\.py:{line}", out), out
    assert "what held memory at that moment:" in out and "parameters" in out
    assert len(re.findall(rf"512 KiB float32\[256x512\].* at \S*test_suite\.py:{line}", out)) >= 2, out
    # The finding's failure names the variable, its line and the fix.
    assert "memprof found 1 memory problem" in out and "[accumulated_tensor]" in out
    assert re.search(r"test_suite\.py:\d+: warning: total", out), out
    # --memprof: the top tests by peak, largest first (the test stopped at the limit is listed too).
    table = out.split("memprof: top 3 of 5 tests by memory peak", 1)[1].splitlines()[1:4]
    peaks = [_bytes(row.split("  test_suite.py::")[0]) for row in table]
    assert len(peaks) == 3 and peaks == sorted(peaks, reverse=True) and peaks[-1] > 0, table


def _bytes(text: str) -> float:
    value, unit = text.split()
    return float(value) * {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]


def test_a_bad_limit_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "test_bad.py").write_text("import pytest\n\n@pytest.mark.limit_memory('lots')\ndef test_x():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_bad.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "limit_memory('lots')" in proc.stdout + proc.stderr


def test_the_plugin_imports_no_torch() -> None:
    code = "import sys, memprof.integrations.pytest_plugin; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
