"""Report <-> JSON (memprof.model.codec and decode, memprof.report.json_io): a fully populated report
survives the round trip, typed sections included; what a newer memprof wrote is kept; pandas views
have the right rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import memprof
from memprof.errors import MemprofError
from memprof.model import (
    SCHEMA,
    AdvisorModel,
    BatchFigures,
    Budget,
    CudaStats,
    FindingKind,
    OomReport,
    RecommendationKind,
    ReplayFigures,
    Report,
    Severity,
    Status,
    TensorRecord,
)
from memprof.model.codec import report_to_dict, save_report
from memprof.model.decode import report_from_dict
from memprof.report.json_io import load_report
from tests.report_factory import SCRIPT, GiB, MiB, make_distributed_report, make_oom_report, make_report


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
    from memprof.model import Category

    report = make_report(oom=OomReport(breakdown={Category.ACTIVATIONS: 5}, extra={"kind": Severity.ERROR}),
                         largest_tensors=[TensorRecord(bytes=1, category=Category.PARAMETERS)])
    report.findings[0].extra = {"severity_hint": Severity.WARNING, "cats": [Category.OTHER]}
    d = json.loads(json.dumps(report.to_dict()))
    assert d["oom"] == {"breakdown": {"activations": 5}, "kind": "error"}
    assert d["largest_tensors"][0]["category"] == "parameters"
    assert d["findings"][0]["extra"] == {"severity_hint": "warning", "cats": ["other"]}


def typed_report() -> Report:
    """Every typed section with every kind of content: figures, nested records, the advisor's model."""
    held = [TensorRecord(bytes=300 * MiB, file=SCRIPT, line=20, function="train"),
            TensorRecord(bytes=100 * MiB, file=None, line=None, function=None)]
    return make_report(
        status=Status.OOM,
        cuda=CudaStats(source="snapshot", allocated_bytes=450 * MiB, reserved_bytes=1 * GiB, active_bytes=450 * MiB,
                       peak_reserved_bytes=2 * GiB, segments=3, num_ooms=1, history_recorded=True,
                       allocator_settings={"expandable_segments": False}),
        oom=OomReport(source="cuda", message="CUDA out of memory", requested_bytes=2 * GiB, step=3, file=SCRIPT,
                      line=61, breakdown={"activations": 6 * GiB}, by_module={"head": 1 * GiB},
                      largest_allocations=held),
        largest_tensors=[TensorRecord(bytes=1 * GiB, shape=[64, 4096], dtype="torch.float32", category="activations",
                                      module="head", created_step=3, file=SCRIPT, line=58, address=0x7F00,
                                      requested_bytes=1 * GiB - 10)],
        advisor=AdvisorModel(
            budget=Budget(bytes=8 * GiB, source="device", parts={"total_bytes": 80 * GiB, "context_bytes": 512 * MiB},
                          note="90% of the device"),
            batch=BatchFigures(reference_batch_size=64, source="measured", extra_bytes=5 * MiB, iterations=4,
                               points=[(400 * MiB, 200 * MiB), (410 * MiB, 190 * MiB)],
                               predicted_peak_bytes=600 * MiB, largest_batch_size=192),
            figures={"precision": {"dtype": "bfloat16", "saved_bytes": 100 * MiB}},
            replay=ReplayFigures(batch_size=64, seconds=0.5, autocast_dtype="bfloat16", checkpointed=["encoder"],
                                 zero_grad="set_to_none"),
            errors=["the optimizer advisor failed: ValueError('x')"],
        ),
    )


def test_round_trip_of_typed_sections() -> None:
    report = typed_report()
    data = json.loads(json.dumps(report_to_dict(report)))
    # the contract's shape: the advisor's budget under "budget", the figures of each advisor by kind
    assert data["advisor"]["budget"] == {"bytes": 8 * GiB, "source": "device", "total_bytes": 80 * GiB,
                                         "context_bytes": 512 * MiB, "note": "90% of the device"}
    assert data["advisor"]["precision"] == {"dtype": "bfloat16", "saved_bytes": 100 * MiB}
    assert data["cuda"]["allocator_settings"] == {"expandable_segments": False}
    assert [a["bytes"] for a in data["oom"]["largest_allocations"]] == [300 * MiB, 100 * MiB]
    again = report_from_dict(data)
    assert again == report
    assert isinstance(again.cuda, CudaStats) and isinstance(again.oom, OomReport)
    assert again.oom.largest_allocations is not None
    assert all(isinstance(t, TensorRecord) for t in [*again.largest_tensors, *again.oom.largest_allocations])
    assert isinstance(again.advisor, AdvisorModel) and again.advisor.batch is not None
    assert again.advisor.batch.points == [(400 * MiB, 200 * MiB), (410 * MiB, 190 * MiB)]
    assert again.budget_bytes == 8 * GiB
    # and the JSON written again is the JSON read
    assert report_to_dict(again) == data


def test_unknown_section_keys_are_kept_in_extra() -> None:
    data = report_to_dict(make_report())
    data["cuda"] = {"reserved_bytes": 900 * MiB, "max_reserved_bytes": 1 * GiB, "pool": {"small": 3}}
    data["oom"] = {"source": "cuda", "requested_bytes": 2 * GiB, "phase": "backward", "streams": [1, 2]}
    data["largest_tensors"] = [{"bytes": 5, "stride": [1, 4], "device": "cuda:1"}]
    data["advisor"]["future_advice"] = {"saved_bytes": 7}
    again = report_from_dict(json.loads(json.dumps(data)))
    assert again.cuda is not None and again.cuda.reserved_bytes == 900 * MiB
    assert again.cuda.extra == {"max_reserved_bytes": 1 * GiB, "pool": {"small": 3}}
    assert again.cuda.get("max_reserved_bytes") == 1 * GiB
    assert again.oom is not None and again.oom.requested_bytes == 2 * GiB
    assert again.oom.extra == {"phase": "backward", "streams": [1, 2]}
    assert list(again.oom.items())[-2:] == [("phase", "backward"), ("streams", [1, 2])]  # after the fields
    assert again.largest_tensors[0].bytes == 5
    assert again.largest_tensors[0].extra == {"stride": [1, 4], "device": "cuda:1"}
    assert again.advisor is not None and again.advisor.figures["future_advice"] == {"saved_bytes": 7}
    # written back as they came
    out = report_to_dict(again)
    assert out["cuda"] == data["cuda"]
    assert out["oom"] == data["oom"]
    assert out["largest_tensors"][0]["stride"] == [1, 4] and out["largest_tensors"][0]["device"] == "cuda:1"
    assert out["advisor"]["future_advice"] == {"saved_bytes": 7}


def test_a_finding_kind_from_a_newer_memprof_is_kept_not_an_error() -> None:
    data = report_to_dict(make_report())
    data["findings"].append({"kind": "leaked_stream", "severity": "critical", "message": "a stream holds 1 GiB",
                             "bytes": 1 * GiB, "file": "/abs/project/train.py", "line": 9})
    data["recommendations"].append({"kind": "use_fsdp", "message": "shard the model"})
    again = report_from_dict(json.loads(json.dumps(data)))
    new = again.findings[-1]
    assert new.kind.value == "leaked_stream" and not new.kind.known
    assert new.kind is FindingKind("leaked_stream")  # the same member each time
    assert new.severity is Severity.INFO  # an unknown severity is shown, counted as a tip
    assert again.findings[0].kind.known
    assert again.recommendations[-1].kind.value == "use_fsdp" and not again.recommendations[-1].kind.known
    out = report_to_dict(again)
    assert out["findings"][-1]["kind"] == "leaked_stream"
    assert out["recommendations"][-1]["kind"] == "use_fsdp"


def test_round_trip_of_a_downsampled_runs_steps_kept() -> None:
    from memprof.model.report import StepsKept

    report = make_report()
    assert "steps_kept" not in report_to_dict(report)  # all steps kept: nothing said
    assert report.step_count == len(report.steps)
    report.steps_kept = StepsKept(total=1_000_000, train=999_000, eval=1_000, detailed=300, kept=2_900,
                                  head=512, tail=512, bucket_steps=2048, bucketed=998_976)
    d = json.loads(json.dumps(report_to_dict(report)))
    assert d["steps_kept"]["total"] == 1_000_000 and d["steps"]  # the contract's steps stay
    back = report_from_dict(d)
    assert back.steps_kept == report.steps_kept
    assert (back.step_count, back.eval_step_count) == (1_000_000, 1_000)
