"""The TensorBoard and CSV reporters: TensorBoard's own reader sees one scalar per step, the CSV
files hold the frames' rows; both from `memprof run`, `memprof report` and the API."""

from __future__ import annotations

import builtins
import csv
import json
from pathlib import Path
from typing import Any

import pytest

from memprof.errors import MemprofError
from memprof.model import Finding, FindingKind, Severity
from memprof.model.report import Report, StepRecord
from memprof.report.csv_files import write_csv
from memprof.report.outputs import REPORTERS
from memprof.report.tensorboard import findings_markdown, write_tensorboard
from tests.conftest import ROOT, run_memprof


def _report() -> Report:
    breakdown = {"parameters": 100, "gradients": 100, "optimizer_state": 200, "activations": 50, "other": 0}
    steps = [StepRecord(index=i, peak_bytes=1000 + i, end_bytes=450, phase="train", detailed=i < 3,
                        breakdown=breakdown if i < 3 else None) for i in range(8)]
    finding = Finding(kind=FindingKind.ACCUMULATED_TENSOR, severity=Severity.WARNING, file="/x/train.py", line=12,
                      variable="total", message="total accumulates | grows", advice="`total += loss.item()`")
    return Report(script="train.py", peak_bytes=1007, steps=steps, findings=[finding])


def _accumulator(path: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_reads_one_scalar_per_step_and_the_findings(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    write_tensorboard(_report(), str(tmp_path / "tb"))
    acc = _accumulator(tmp_path / "tb")
    peaks = acc.Scalars("memory/peak_bytes")
    assert [e.step for e in peaks] == list(range(8)) and [e.value for e in peaks] == [1000 + i for i in range(8)]
    assert [e.step for e in acc.Scalars("memory/end/optimizer_state_bytes")] == [0, 1, 2]  # the detailed steps
    assert [e.value for e in acc.Scalars("memory/end/optimizer_state_bytes")] == [200, 200, 200]
    text = acc.Tensors("memprof/findings")[0].tensor_proto.string_val[0].decode()
    assert "accumulated_tensor" in text and "train.py:12" in text and "total accumulates \\| grows" in text


def test_tensorboard_missing_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(MemprofError, match=r"pip install 'memprof\[tensorboard\]'"):
        write_tensorboard(_report(), str(tmp_path / "tb"))


def test_csv_files_hold_the_frames(tmp_path: Path) -> None:
    write_csv(_report(), str(tmp_path / "out"))
    with open(tmp_path / "out" / "steps.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["index"]) for r in rows] == list(range(8)) and rows[0]["end_optimizer_state_bytes"] == "200"
    assert rows[5]["end_optimizer_state_bytes"] == ""  # watched: not measured, not guessed
    with open(tmp_path / "out" / "findings.csv") as fh:
        findings = list(csv.DictReader(fh))
    assert [(f["kind"], f["line"], f["variable"]) for f in findings] == [("accumulated_tensor", "12", "total")]
    assert (tmp_path / "out" / "modules.csv").read_text().startswith("name,type,")


def test_both_are_reporters_of_the_registry() -> None:
    names = {r.name: r for r in REPORTERS}
    assert names["tensorboard"].option.flag == "--tensorboard" and names["csv"].option.flag == "--csv"
    assert findings_markdown(Report(script="x")) == "No memory problems found."


@pytest.mark.slow
def test_from_memprof_run_and_memprof_report(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    proc = run_memprof("run", "-q", "--json", "r.json", "--tensorboard", "tb", "--csv", "csv",
                       str(ROOT / "examples" / "train_mlp.py"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    acc = _accumulator(tmp_path / "tb")
    assert [e.step for e in acc.Scalars("memory/peak_bytes")] == [s["index"] for s in report["steps"]]
    assert acc.Scalars("memory/end/parameters_bytes")  # detailed steps' categories
    with open(tmp_path / "csv" / "steps.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(report["steps"])
    again = run_memprof("report", "r.json", "--tensorboard", "tb2", "--csv", "csv2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr.decode()
    assert len(_accumulator(tmp_path / "tb2").Scalars("memory/peak_bytes")) == len(report["steps"])
    assert (tmp_path / "csv2" / "findings.csv").exists()
