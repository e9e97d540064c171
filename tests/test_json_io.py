"""Report <-> JSON: a fully populated report survives the round trip; pandas views have the right rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import memprof
from memprof.errors import MemprofError
from memprof.report.json_io import load_report, report_from_dict, report_to_dict, save_report
from memprof.report.model import SCHEMA, FindingKind, RecommendationKind, Report, Severity, Status

try:
    from tests.report_factory import GiB, make_distributed_report, make_oom_report, make_report
except ImportError:
    from report_factory import GiB, make_distributed_report, make_oom_report, make_report  # type: ignore[no-redef]


def full_report() -> Report:
    """Everything set at once: findings with ranks and extras, recommendations, ranks, OOM, CUDA."""
    oom = make_oom_report()
    return make_distributed_report(status=Status.OOM, exit_code=1, error=oom.error, oom=oom.oom,
                                   largest_tensors=oom.largest_tensors, findings=oom.findings)


def test_round_trip_of_a_fully_populated_report() -> None:
    report = full_report()
    for f in report.findings:
        f.ranks = [0, 1]
    assert report.ranks and report.oom and report.findings and report.recommendations
    data = json.loads(json.dumps(report.to_dict()))
    again = report_from_dict(data)
    assert again == report
    assert again.findings[0].kind is FindingKind.OOM
    assert again.findings[0].severity is Severity.ERROR
    assert again.recommendations[0].kind is RecommendationKind.BATCH_SIZE
    assert again.ranks is not None and [r.rank for r in again.ranks] == [0, 1]
    assert again.ranks[1].steps == report.ranks[1].steps


def test_contract_shape_of_the_dict() -> None:
    d = report_to_dict(make_distributed_report())
    assert d["schema"] == SCHEMA == "memprof.report/1"
    assert d["status"] == "ok"
    assert set(d["breakdown_at_peak"]) == {"parameters", "gradients", "optimizer_state", "activations", "other"}
    assert sum(d["breakdown_at_peak"].values()) == d["peak_bytes"]
    assert {"index", "peak_bytes", "end_bytes", "batch_size", "seconds"} <= set(d["steps"][0])
    assert {"name", "type", "parameter_bytes", "activation_bytes", "gradient_bytes"} <= set(d["modules"][0])
    f = next(f for f in d["findings"] if f["kind"] == "accumulated_tensor")
    assert f["ranks"] == [1] and f["file"] == "/abs/project/train.py" and f["line"] == 42
    r = d["recommendations"][0]
    assert (r["current"], r["suggested"], r["budget_bytes"]) == (64, 192, 8 * GiB)
    assert [x["rank"] for x in d["ranks"]] == [0, 1]
    assert "oom" not in d  # optional extensions are left out when unset


def test_save_and_load_file(tmp_path: Path) -> None:
    report = full_report()
    path = tmp_path / "sub" / "report.json"
    save_report(report, path)
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left behind
    assert path.stat().st_mode & 0o044 == 0o044  # an ordinary, readable file (mkstemp's are 0600)
    assert json.loads(path.read_text())["schema"] == SCHEMA
    assert load_report(path) == report
    assert memprof.load_report(str(path)) == report
    report.save(str(tmp_path / "again.json"))
    assert load_report(tmp_path / "again.json") == report


def test_unknown_keys_are_ignored_and_missing_ones_defaulted() -> None:
    d = report_to_dict(make_report())
    d["from_the_future"] = 1
    d["findings"][0]["confidence"] = 0.9
    d["steps"][0]["tokens"] = 123
    del d["modules"]
    again = report_from_dict(d)
    assert again.modules == []
    assert again.findings[0].kind is make_report().findings[0].kind
    minimal = report_from_dict({"schema": SCHEMA, "script": "x.py"})
    assert minimal.status is Status.OK and minimal.peak_bytes == 0 and minimal.steps == []


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(MemprofError, match="cannot read report"):
        load_report(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(MemprofError, match="is not JSON"):
        load_report(bad)
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(MemprofError, match="not a memprof report"):
        load_report(other)


def test_steps_frame_rows_and_values() -> None:
    report = make_report()
    df = report.steps_frame()
    assert len(df) == 30
    assert list(df["index"]) == list(range(30))
    assert int(df["peak_bytes"].max()) == report.peak_bytes
    assert df.loc[0, "end_bytes"] == report.steps[0].end_bytes
    assert set(df["phase"]) == {"train", "eval"}
    empty = make_report(steps=[]).steps_frame()
    assert len(empty) == 0 and "peak_bytes" in empty.columns


def test_modules_and_findings_frames() -> None:
    report = make_report()
    mf = report.modules_frame()
    assert list(mf["name"]) == [m.name for m in report.modules]
    assert int(mf.set_index("name").loc["embed", "parameter_bytes"]) == 64 * 1024**2
    ff = report.findings_frame()
    assert len(ff) == 3
    assert set(ff["kind"]) == {"lingering_tensor", "accumulated_tensor", "missing_no_grad"}
    assert list(ff.columns[:4]) == ["kind", "severity", "file", "line"]


def test_enums_inside_free_form_fields_are_written_as_their_values() -> None:
    from memprof.report.model import Category

    report = make_report(oom={"breakdown": {Category.ACTIVATIONS: 5}, "kind": Severity.ERROR},
                         largest_tensors=[{"bytes": 1, "category": Category.PARAMETERS}])
    report.findings[0].extra = {"severity_hint": Severity.WARNING, "cats": [Category.OTHER]}
    d = json.loads(json.dumps(report.to_dict()))
    assert d["oom"] == {"breakdown": {"activations": 5}, "kind": "error"}
    assert d["largest_tensors"][0]["category"] == "parameters"
    assert d["findings"][0]["extra"] == {"severity_hint": "warning", "cats": ["other"]}
