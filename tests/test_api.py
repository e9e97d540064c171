"""The library API from a plain Python program: track(), @profile, load_report, frames."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn

import memprof
from memprof.model import FindingKind, Report, Status
from memprof.report.outputs import REPORTERS, Option, Reporter


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
    text = memprof.render_summary(report)
    assert text.startswith("memprof: ") and "total" in text and "accumulated_tensor" in text


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


def test_track_records_an_exception_and_reraises_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="stop"):
        with memprof.track(json=str(tmp_path / "r.json")) as session:
            _train(1)
            raise RuntimeError("stop")
    assert session.report is not None and session.report.status is Status.ERROR
    assert memprof.load_report(tmp_path / "r.json").status is Status.ERROR  # written when the block raised


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


@pytest.mark.parametrize("reporter", REPORTERS, ids=lambda r: r.name)
def test_each_reporter_is_a_keyword_of_track(reporter: Reporter, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    if getattr(reporter, "requires", None):  # an optional dependency (tensorboard): tested where installed
        pytest.importorskip(reporter.requires)  # type: ignore[attr-defined]
    path = tmp_path / f"r.{reporter.name}"
    keyword: dict[str, Any] = {reporter.name: str(path)}
    with memprof.track(**keyword):
        _train(1)
    assert (any(p.stat().st_size > 0 for p in path.iterdir()) if path.is_dir() else path.stat().st_size > 0)
    assert capsys.readouterr().err == ""  # the summary only when asked


def test_summary_keyword_prints_the_summary_and_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    with memprof.track(json=str(path), summary=True):
        _train(2)
    err = capsys.readouterr().err
    assert err.startswith("memprof: ") and err.endswith(f"memprof: report written to {path}\n")


class _Steps:
    name = "steps"
    label = "steps table"
    option = Option("--steps", "write one line per step to PATH")
    best_effort = True

    def write(self, report: Report, path: str) -> None:
        Path(path).write_text(f"{len(report.steps)}\n")


@pytest.fixture
def steps_reporter() -> Iterator[_Steps]:
    """``_Steps`` in the registry, as its one line there would put it."""
    reporter = _Steps()
    REPORTERS.append(reporter)
    yield reporter
    REPORTERS.remove(reporter)


@pytest.mark.usefixtures("steps_reporter")
def test_a_registered_reporter_is_a_keyword_of_track_and_profile(tmp_path: Path) -> None:
    with memprof.track(steps=str(tmp_path / "a.txt")):
        _train(2)
    assert (tmp_path / "a.txt").read_text() == "2\n"

    @memprof.profile(steps=str(tmp_path / "b.txt"))
    def train() -> None:
        _train(3)

    train()
    assert (tmp_path / "b.txt").read_text() == "3\n"


def test_an_unknown_output_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'jsn'"):
        with memprof.track(jsn="r.json"):
            pass


def test_import_has_no_side_effects() -> None:
    import subprocess
    import sys

    code = "import sys, memprof; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # importing memprof neither imports torch nor hooks anything
