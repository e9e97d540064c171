"""``%load_ext memprof``, ``%%memprof`` and ``%memprof`` in a real IPython shell (a subprocess fed
its cells on stdin, as a person types them)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("IPython")

CELLS = """%load_ext memprof
import torch
from torch import nn
model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
%%memprof --budget 1GiB
total = 0
for step in range(8):
    opt.zero_grad()
    loss = model(torch.randn(32, 64)).pow(2).mean()
    loss.backward()
    opt.step()
    total = total + loss


report = _
print("frame", len(report.steps_frame()), report is memprof_report)
%memprof -q model(torch.randn(8, 64))
print("line", _.status.value, len(_.steps))
"""


def _ipython(cells: str, cwd: Path) -> str:
    exe = shutil.which("ipython", path=str(Path(sys.executable).parent)) or "ipython"
    proc = subprocess.run([exe, "--no-banner", "--quick", "--colors=nocolor", "--simple-prompt"], input=cells,
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_cell_prints_the_summary_and_returns_the_report(tmp_path: Path) -> None:
    out = _ipython(CELLS, tmp_path)
    assert re.search(r"memprof: <ipython-input-\d+-\w+> · ok · cpu · [\d.]+ s · 8 steps", out), out
    assert "at peak" in out and "parameters" in out
    # The finding at the cell's line (the cell's own numbering), with the variable and its fix.
    assert re.search(r"<ipython-input-\d+-\w+>:7: warning: total accumulates the autograd history", out), out
    assert "findings (1 warning)" in out, out  # the shell's namespace is no second holder of `total`
    assert "`total = total + loss.item()`" in out
    assert "batch_size: batch size 32 fits the --budget of 1.00 GiB" in out
    assert re.search(r"Out\[\d+\]: <memprof Report: <ipython-input-\d+-\w+> · ok · 8 steps · peak [\d.]+ \w+ · "
                     r"1 warning · \d+ recommendations?>", out), out
    assert "frame 8 True" in out
    assert "line ok 1" in out  # the line magic, quiet: its report, one evaluation call
    assert "Traceback" not in out, out
