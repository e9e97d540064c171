"""The runner's SIGTERM path on a long run: the report (bounded, status interrupted) is written and
the process exits within 2 s, however many steps came before (benchmarks/long_run.py measures a
million)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = """\
import torch
w = torch.zeros(4, requires_grad=True)
opt = torch.optim.SGD([w], lr=0.01)
x = torch.ones(4)
for i in range(10_000_000):
    loss = (x * w).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if i == 12_000:
        print("READY", flush=True)
"""


def test_sigterm_after_many_steps_exits_fast_with_a_bounded_report(tmp_path: Path) -> None:
    script, out = tmp_path / "long.py", tmp_path / "r.json"
    script.write_text(SCRIPT)
    env = dict(os.environ, MEMPROF_LIVE_DIR=str(tmp_path / "live"))
    proc = subprocess.Popen([sys.executable, "-m", "memprof", "run", "-q", "--json", str(out), str(script)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.time() + 240
    for line in proc.stdout:
        if "READY" in line or time.time() > deadline:
            break
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    took = time.perf_counter() - t0
    assert proc.returncode == -signal.SIGTERM
    assert took < 2.0, took
    report = json.loads(out.read_text())
    assert report["status"] == "interrupted"
    kept = report["steps_kept"]
    assert kept["total"] > 12_000 and len(report["steps"]) == kept["kept"] < kept["total"]
    assert out.stat().st_size < 2_000_000


AFTER_LOOP = """\
import torch
model = torch.nn.Linear(4, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for _ in range(40):
    opt.zero_grad()
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
big = torch.ones(2 * 1024 * 1024)  # 8 MiB, after the loop: watched, alive to the end as a global
"""


def test_a_global_made_after_the_loop_is_in_the_peak_as_a_script_and_as_a_module(tmp_path: Path) -> None:
    (tmp_path / "after.py").write_text(AFTER_LOOP)
    env = dict(os.environ, MEMPROF_LIVE_DIR=str(tmp_path / "live"))
    for target in (["after.py"], ["-m", "after"]):
        out = tmp_path / "r.json"
        proc = subprocess.run([sys.executable, "-m", "memprof", "run", "-q", "--json", str(out), *target],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-2000:]
        report = json.loads(out.read_text())
        assert report["peak_bytes"] >= 8 << 20, (target, report["peak_bytes"])
