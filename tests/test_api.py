"""The library API from a plain Python program: track(), @profile, load_report, frames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import memprof
from memprof.report.model import FindingKind, Status


def _train(steps: int, keep: list[torch.Tensor] | None = None) -> None:
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    total = 0
    for _ in range(steps):
        out = model(torch.randn(16, 32))
        loss = out.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss  # the classic mistake: the history of every step
    assert float(total) > 0


def test_track_gives_a_report_with_steps_modules_and_findings(tmp_path: Path) -> None:
    with memprof.track(json=str(tmp_path / "r.json")) as session:
        _train(6)
    report = session.report
    assert isinstance(report, memprof.Report)
    assert report.status is Status.OK
    assert len(report.steps) == 6 and report.peak_bytes > 0
    assert report.breakdown_at_peak.total == report.peak_bytes
    assert report.breakdown_at_peak.parameters > 0 and report.breakdown_at_peak.optimizer_state == 0  # plain SGD
    kinds = {f.kind for f in report.diagnoses}
    assert FindingKind.ACCUMULATED_TENSOR in kinds
    acc = next(f for f in report.diagnoses if f.kind is FindingKind.ACCUMULATED_TENSOR)
    assert acc.variable == "total" and acc.file == __file__
    assert acc.step is not None and acc.step <= 5  # found within the first few steps
    loaded = memprof.load_report(tmp_path / "r.json")
    assert loaded.peak_bytes == report.peak_bytes and len(loaded.findings) == len(report.findings)


def test_profile_decorator_bare_and_with_options(tmp_path: Path) -> None:
    @memprof.profile
    def bare() -> int:
        _train(3)
        return 7

    @memprof.profile(json=str(tmp_path / "p.json"))
    def with_json() -> None:
        _train(2)

    assert bare() == 7
    assert bare.memprof_report is not None and len(bare.memprof_report.steps) == 3
    with_json()
    assert memprof.load_report(tmp_path / "p.json").steps[-1].index == 1


def test_track_records_an_exception_and_reraises_it() -> None:
    with pytest.raises(RuntimeError, match="stop"):
        with memprof.track() as session:
            _train(1)
            raise RuntimeError("stop")
    assert session.report is not None and session.report.status is Status.ERROR


def test_track_counts_a_model_made_before_the_block() -> None:
    model = nn.Linear(256, 256)  # 257 KiB of parameters, made before tracking starts
    opt = torch.optim.Adam(model.parameters())
    with memprof.track() as session:
        for _ in range(3):
            model(torch.randn(8, 256)).sum().backward()
            opt.step()
            opt.zero_grad()
    bd = session.report.breakdown_at_peak  # type: ignore[union-attr]
    param_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert bd.parameters >= param_bytes
    assert bd.optimizer_state >= 2 * param_bytes


def test_frames_are_pandas() -> None:
    with memprof.track() as session:
        _train(4)
    report = session.report
    assert report is not None
    steps, modules = report.steps_frame(), report.modules_frame()
    assert isinstance(steps, pd.DataFrame) and list(steps["index"]) == [0, 1, 2, 3]
    assert isinstance(modules, pd.DataFrame) and "activation_bytes" in modules.columns and len(modules) >= 3
    assert (steps["peak_bytes"] >= steps["end_bytes"]).all()


def test_import_has_no_side_effects() -> None:
    import subprocess
    import sys

    code = "import sys, memprof; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # importing memprof neither imports torch nor hooks anything
