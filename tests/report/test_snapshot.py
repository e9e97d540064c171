"""Reading PyTorch CUDA memory snapshots (synthetic pickles; no GPU needed)."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from memprof.errors import MemprofError
from memprof.model import FindingKind, RecommendationKind, Severity, Status
from memprof.model.decode import report_from_dict
from memprof.report.html import render_html
from memprof.report.snapshot import (
    is_snapshot_file,
    report_from_snapshot,
    report_from_snapshot_dict,
    user_frame,
)
from memprof.report.summary import render_summary
from tests.report_factory import SCRIPT, GiB, MiB, make_snapshot, user_frames


def dump(tmp_path: Path, data: Any, name: str = "snapshot.pickle", protocol: int = 4) -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def test_peak_replayed_from_trace_and_anchored_on_live_state(tmp_path: Path) -> None:
    report = report_from_snapshot(dump(tmp_path, make_snapshot()))
    # 50 MiB from before the trace + 300 MiB + the 500 MiB temporary
    assert report.peak_bytes == 850 * MiB
    assert report.status is Status.OK
    assert report.device.type == "cuda" and report.device.index == 0
    assert report.cuda is not None
    assert report.cuda.allocated_bytes == 450 * MiB
    assert report.cuda.reserved_bytes == 1 * GiB
    assert report.cuda.trace_entries == 5
    assert report.duration_seconds == pytest.approx(1.0)
    assert report.cuda.allocator_settings == {"expandable_segments": False, "max_split_size": -1}


def test_largest_blocks_with_first_user_frame(tmp_path: Path) -> None:
    report = report_from_snapshot(dump(tmp_path, make_snapshot()))
    sizes = [t.bytes for t in report.largest_tensors]
    assert sizes == [300 * MiB, 100 * MiB, 50 * MiB]
    top = report.largest_tensors[0]
    assert (top.file, top.line, top.function) == (SCRIPT, 20, "train")
    assert report.largest_tensors[1].line == 30
    assert report.largest_tensors[2].file is None  # no frames recorded for it


def test_block_frames_fall_back_to_the_trace_and_to_old_history(tmp_path: Path) -> None:
    snap = make_snapshot()
    blocks = snap["segments"][0]["blocks"]
    blocks[0]["frames"] = []  # the alloc event in the trace still has them
    blocks[2]["frames"] = []
    blocks[2]["history"] = [{"addr": blocks[2]["address"], "real_size": 1, "frames": user_frames(31)}]
    report = report_from_snapshot(dump(tmp_path, snap))
    by_size = {t.bytes: t for t in report.largest_tensors}
    assert by_size[300 * MiB].line == 20
    assert by_size[100 * MiB].line == 31


def test_user_frame_skips_torch_memprof_cpp_and_stdlib() -> None:
    frames = [
        {"filename": "/pytorch/aten/src/ATen/native/Linear.cpp", "line": 1, "name": "x"},
        {"filename": "/venv/lib/python3.11/site-packages/torch/nn/functional.py", "line": 2, "name": "x"},
        {"filename": "/work/main/memprof/collect/cuda.py", "line": 3, "name": "x"},
        {"filename": "/usr/lib/python3.11/contextlib.py", "line": 4, "name": "x"},
        {"filename": "/home/me/proj/model.py", "line": 5, "name": "forward"},
        {"filename": "/home/me/proj/train.py", "line": 6, "name": "main"},
    ]
    assert user_frame(frames) == frames[4]
    # only library frames: the innermost one outside torch and memprof
    lib = {"filename": "/venv/lib/python3.11/site-packages/transformers/modeling.py", "line": 7, "name": "f"}
    assert user_frame([frames[0], frames[1], lib]) == lib
    assert user_frame(frames[:3]) is None
    assert user_frame(None) is None


def test_fragmentation_finding_and_allocator_advice(tmp_path: Path) -> None:
    report = report_from_snapshot(dump(tmp_path, make_snapshot(fragmented=True)))
    frag = [f for f in report.findings if f.kind is FindingKind.FRAGMENTATION]
    assert len(frag) == 1
    f = frag[0]
    assert f.severity is Severity.WARNING
    assert f.file is None and f.line is None
    assert f.bytes == 2 * GiB - 450 * MiB
    assert "cached but unused" in f.message and "expandable_segments" in f.advice
    assert [r.kind for r in report.recommendations] == [RecommendationKind.ALLOCATOR_CONFIG]


def test_no_fragmentation_below_thresholds(tmp_path: Path) -> None:
    # 1 GiB reserved, 450 MiB active: 574 MiB cached = 56% and > 256 MiB -> flagged
    assert any(f.kind is FindingKind.FRAGMENTATION
               for f in report_from_snapshot(dump(tmp_path, make_snapshot())).findings)
    # a share above 30% but under 256 MiB is not worth a warning
    small = make_snapshot()
    seg = small["segments"][0]
    seg["blocks"] = [b for b in seg["blocks"] if b["state"] == "active_allocated"]
    seg["blocks"].append({"address": 1, "size": 200 * MiB, "state": "inactive", "frames": []})
    seg["total_size"] = 650 * MiB
    assert not report_from_snapshot_dict(small).findings
    # many bytes cached but under 30% of reserved: not flagged either
    big = copy.deepcopy(small)
    big["segments"][0]["blocks"].append({"address": 2, "size": 8 * GiB, "state": "active_allocated"})
    big["segments"][0]["blocks"][-2]["size"] = 300 * MiB
    big["segments"][0]["total_size"] = 450 * MiB + 8 * GiB + 300 * MiB
    assert not report_from_snapshot_dict(big).findings


def test_pending_free_counts_as_active_not_cached() -> None:
    snap = make_snapshot()
    for b in snap["segments"][0]["blocks"]:
        if b["state"] == "inactive":
            b["state"] = "active_pending_free"
    report = report_from_snapshot_dict(snap)
    assert report.cuda is not None
    assert report.cuda.inactive_bytes == 0
    assert report.cuda.allocated_bytes == 450 * MiB
    assert not any(f.kind is FindingKind.FRAGMENTATION for f in report.findings)


def test_oom_in_trace_gives_an_error_finding_and_post_mortem(tmp_path: Path) -> None:
    report = report_from_snapshot(dump(tmp_path, make_snapshot(oom=True)))
    assert report.status is Status.OOM
    oom = [f for f in report.findings if f.kind is FindingKind.OOM]
    assert len(oom) == 1
    f = oom[0]
    assert f.severity is Severity.ERROR
    assert (f.file, f.line) == (SCRIPT, 42)
    assert f.bytes == 2 * GiB
    assert "2.00 GiB" in f.message and "450 MiB allocated" in f.message and "train.py:20" in f.message
    assert report.oom is not None
    assert report.oom.requested_bytes == 2 * GiB
    assert report.oom.device_free_bytes == 10 * MiB
    assert report.oom.allocated_bytes == 450 * MiB
    assert [a.bytes for a in report.oom.largest_allocations or []] == [300 * MiB, 100 * MiB]
    assert report.cuda is not None and report.cuda.num_ooms == 1


def test_no_history_uses_current_state_and_says_so(tmp_path: Path) -> None:
    report = report_from_snapshot(dump(tmp_path, make_snapshot(history=False)))
    assert report.peak_bytes == 450 * MiB
    assert any("_record_memory_history" in w for w in report.warnings)
    # without device_traces at all
    snap = make_snapshot()
    del snap["device_traces"]
    assert report_from_snapshot_dict(snap).peak_bytes == 450 * MiB


def test_truncated_ring_buffer_is_anchored_on_the_end_state() -> None:
    snap = make_snapshot(history=False)
    # the trace starts with a free of a block allocated before it, then allocates 10 MiB
    snap["device_traces"] = [[
        {"action": "free_completed", "addr": 11, "size": 700 * MiB},
        {"action": "alloc", "addr": 12, "size": 10 * MiB},
    ]]
    # it ends at the 450 MiB active in the segments, so 450 + 700 - 10 were allocated before it
    assert report_from_snapshot_dict(snap).peak_bytes == 1140 * MiB
    # with no live blocks at all (recording stopped before the snapshot, say) the replay still
    # never goes below zero: at least the 700 MiB freed must have been there
    snap["segments"] = []
    assert report_from_snapshot_dict(snap).peak_bytes == 700 * MiB


def test_several_devices_reads_the_largest_and_warns() -> None:
    snap = make_snapshot()
    small = copy.deepcopy(snap["segments"][0])
    small["device"] = 1
    small["total_size"] = 1 * MiB
    small["blocks"] = [{"address": 5, "size": 1 * MiB, "state": "active_allocated"}]
    snap["segments"].append(small)
    snap["device_traces"].append([])
    report = report_from_snapshot_dict(snap)
    assert report.device.index == 0
    assert any("cuda:1" in w for w in report.warnings)


def test_report_round_trips_through_json_and_renders(tmp_path: Path) -> None:
    report = report_from_snapshot(dump(tmp_path, make_snapshot(fragmented=True, oom=True)))
    data = json.loads(json.dumps(report.to_dict()))
    again = report_from_dict(data)
    assert again.peak_bytes == report.peak_bytes
    assert [f.kind for f in again.findings] == [f.kind for f in report.findings]
    text = render_summary(report)
    assert "[fragmentation]" in text and "[oom]" in text
    doc = render_html(report)
    assert "A PyTorch memory snapshot holds no per-step figures." in doc
    assert 'id="allocator"' in doc


def test_old_pickle_protocols_are_accepted(tmp_path: Path) -> None:
    for protocol in (0, 2, 5):
        path = dump(tmp_path, make_snapshot(), name=f"p{protocol}.pickle", protocol=protocol)
        assert is_snapshot_file(path)
        assert report_from_snapshot(path).peak_bytes == 850 * MiB


def test_not_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text('{"schema": "memprof.report/1"}')
    assert not is_snapshot_file(path)
    with pytest.raises(MemprofError, match="not a PyTorch memory snapshot"):
        report_from_snapshot(path)


@pytest.mark.parametrize("data", [[1, 2, 3], {"device_traces": []}, {"segments": "nope"}])
def test_pickles_that_are_not_snapshots(tmp_path: Path, data: Any) -> None:
    with pytest.raises(MemprofError) as info:
        report_from_snapshot(dump(tmp_path, data))
    assert "\n" not in info.value.message


def test_truncated_pickle(tmp_path: Path) -> None:
    raw = pickle.dumps(make_snapshot(), protocol=4)
    path = tmp_path / "cut.pickle"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MemprofError, match="not a readable memory snapshot"):
        report_from_snapshot(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MemprofError, match="cannot read snapshot"):
        report_from_snapshot(tmp_path / "nope.pickle")


_RAN: list[str] = []


def _payload() -> None:
    _RAN.append("ran")


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_payload, ())


def test_pickles_with_code_are_refused_without_running_it(tmp_path: Path) -> None:
    path = dump(tmp_path, {"segments": [], "device_traces": [[{"action": "alloc", "frames": _Evil()}]]})
    with pytest.raises(MemprofError, match="refusing to load"):
        report_from_snapshot(path)
    assert _RAN == []
