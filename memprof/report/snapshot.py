"""Read a PyTorch CUDA memory snapshot pickle into a memprof :class:`Report`.

A snapshot is what ``torch.cuda.memory._dump_snapshot(path)`` writes (after
``torch.cuda.memory._record_memory_history()``): a pickled ``dict``. This module reads it
without torch and without a GPU.

Schema relied on
----------------
Only plain Python data (dicts, lists, str, int, float, bool, None, tuples) is accepted.

``snapshot["segments"]`` (required): a list of segments (memory from one ``cudaMalloc``), each::

    {"device": int, "address": int, "total_size": int, "allocated_size": int,
     "active_size": int, "stream": int, "segment_type": "large" | "small",
     "blocks": [{"address": int, "size": int, "requested_size": int,
                 "state": "active_allocated" | "active_pending_free" | "inactive",
                 "frames": [{"filename": str, "line": int, "name": str}, ...]}, ...]}

  ``reserved`` is the sum of ``total_size``; ``allocated`` the sum of the ``active_allocated``
  blocks (``allocated_size`` when a segment lists no blocks); ``active`` also counts blocks whose
  state starts with ``active_`` (``active_pending_free`` / ``active_awaiting_free``). Older
  snapshots keep a block's frames in ``block["history"][-1]["frames"]``: read too.

``snapshot["device_traces"]`` (optional): one list per device index of trace entries::

    {"action": "alloc" | "free_requested" | "free_completed" | "segment_alloc" | "segment_free"
               | "segment_map" | "segment_unmap" | "snapshot" | "oom",
     "addr": int, "size": int, "stream": int, "time_us": int,
     "frames": [{"filename": str, "line": int, "name": str}, ...],
     "device_free": int}          # "oom" only: what CUDA still reported free

  Frames are innermost first. The allocated bytes over time are replayed from ``alloc`` (+size)
  and ``free_completed`` (-size); reserved bytes from ``segment_alloc``/``segment_map`` (+) and
  ``segment_free``/``segment_unmap`` (-). Other actions are ignored.

``snapshot["allocator_settings"]`` (optional): a dict (e.g. ``{"expandable_segments": False}``),
kept in ``report.cuda.allocator_settings``.

What the Report holds
---------------------
``peak_bytes``: the peak allocated bytes over the trace (see the anchoring below), or the bytes
allocated at the snapshot when there is no trace. ``cuda`` (a :class:`~memprof.model.CudaStats`):
``allocated_bytes``, ``reserved_bytes``, ``active_bytes``, ``inactive_bytes`` (cached, unused),
``peak_reserved_bytes``, ``segments``, ``num_ooms``, ``trace_entries``. ``largest_tensors``: the
largest live blocks with their first user frame. Findings: ``fragmentation`` (warning) when the
cached, unused bytes are over 30% of reserved and over 256 MiB; ``oom`` (error) when the trace
holds an ``oom`` action, with what was allocated then and the largest live allocations of the
recorded history (an :class:`~memprof.model.OomReport`). The replay of the trace and each
device's state are in :mod:`memprof.report.snapshot_state`.

Known limitations
-----------------
- The trace is a ring buffer (``max_entries``): allocations made before it starts are unknown.
  The replay is anchored on the snapshot's own state (the bytes active at the end); when the trace
  was stopped before the snapshot was taken that anchor is off, and the replay then assumes the
  least baseline consistent with the trace (it never lets allocated bytes go negative).
- Blocks carry no shape, dtype or category: ``breakdown_at_peak`` stays empty (all zero),
  ``steps`` and ``modules`` are empty, and ``largest_tensors`` give bytes and source lines only.
- One device per report: with several devices, the one with the most reserved memory (then the
  most trace entries) is read and the others are named in ``report.warnings``.
- "User frame" is :func:`memprof.model.paths.is_user_file`'s rule; a path that does not exist on
  this machine (the snapshot may come from another) is judged by its folder names (``/torch/``,
  ``/memprof/``, site-packages, the standard library) and C++ sources are never the user's.
- ``device.total_bytes`` is unknown (the snapshot does not hold it).
"""

from __future__ import annotations

import heapq
import io
import os
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

from memprof._version import __version__
from memprof.errors import MemprofError
from memprof.model import (
    CudaStats,
    DeviceInfo,
    Finding,
    FindingKind,
    OomReport,
    Recommendation,
    RecommendationKind,
    Report,
    Severity,
    Status,
    TensorRecord,
)
from memprof.model.paths import is_library_file, is_user_file
from memprof.report.snapshot_state import DeviceState, Replay, as_int, choose_device, device_states, replay_trace
from memprof.units import fmt_bytes

MiB = 1024**2
FRAGMENTATION_SHARE = 0.30
FRAGMENTATION_MIN_BYTES = 256 * MiB
LARGEST_BLOCKS = 10

_PICKLE_PEEK = 64
_ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
                    ("builtins", "complex")}

# The library fallback of a user frame: any but torch's, memprof's and compiled sources.
_TORCH_OR_MEMPROF = re.compile(r"[\\/](torch|memprof)[\\/]|\.(cpp|cc|cxx|c|h|hpp|cu|cuh|so)$")


# ----------------------------------------------------------------------------------------- loading


def looks_like_pickle(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) starts a pickle whose top object is a dict."""
    try:
        ops = pickletools.genops(io.BytesIO(head))
        for i, (op, _arg, _pos) in enumerate(ops):
            if op.name in ("PROTO", "FRAME"):
                continue
            if op.name == "EMPTY_DICT":
                return True
            if op.name == "MARK" and i <= 2:
                # protocol 0/1: MARK ... DICT; accept when the head holds nothing but that start
                return True
            return False
    except Exception:  # truncated head or not a pickle at all: genops raises on both
        return False
    return False


def is_snapshot_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts like a pickled dict (a candidate memory snapshot), by content."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_PICKLE_PEEK)
    except OSError:
        return False
    return looks_like_pickle(head)


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any class or function reference is refused, so nothing runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise MemprofError(f"refusing to load {module}.{name}: a memory snapshot holds plain data only")


def load_snapshot(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The snapshot dict in ``path``; MemprofError with one line for anything that isn't one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_PICKLE_PEEK)
            if not looks_like_pickle(head):
                raise MemprofError(f"{path} is not a PyTorch memory snapshot (not a pickled dict)")
            fh.seek(0)
            data = _PlainUnpickler(fh).load()
    except OSError as e:
        raise MemprofError(f"cannot read snapshot {path}: {e.strerror or e}") from None
    except MemprofError:
        raise
    except Exception as e:  # corrupt or truncated pickles raise a zoo of errors
        raise MemprofError(f"{path} is not a readable memory snapshot: {type(e).__name__}: {e}") from None
    if not isinstance(data, dict) or "segments" not in data:
        raise MemprofError(f"{path} is not a PyTorch memory snapshot (a pickled dict without 'segments')")
    if not isinstance(data["segments"], list):
        raise MemprofError(f"{path}: 'segments' is not a list; not a PyTorch memory snapshot")
    return data


# ----------------------------------------------------------------------------------------- frames


def user_frame(frames: Any) -> dict[str, Any] | None:
    """The innermost frame of the user's code (:func:`memprof.model.paths.is_user_file`).

    Falls back to the innermost frame of an installed library or the standard library, outside
    torch and memprof, when no frame is the user's.
    """
    if not isinstance(frames, list):
        return None
    fallback = None
    for fr in frames:
        if not isinstance(fr, dict):
            continue
        name = str(fr.get("filename") or "")
        if is_user_file(name):
            return fr
        if fallback is None and is_library_file(name) and not _TORCH_OR_MEMPROF.search(name):
            fallback = fr
    return fallback


def _block_frames(block: dict[str, Any]) -> Any:
    frames = block.get("frames")
    if frames:
        return frames
    history = block.get("history")
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        return history[-1].get("frames")
    return None


def _site(frames: Any) -> tuple[str | None, int | None, str | None]:
    fr = user_frame(frames)
    if fr is None:
        return None, None, None
    line = fr.get("line")
    return str(fr.get("filename")), int(line) if isinstance(line, int) else None, fr.get("name")


# ----------------------------------------------------------------------------------------- report


def _largest_blocks(blocks: list[dict[str, Any]], alloc_frames: dict[int, Any]) -> list[TensorRecord]:
    out = []
    for b in heapq.nlargest(LARGEST_BLOCKS, blocks, key=lambda b: as_int(b.get("size"))):
        addr = as_int(b.get("address"))
        frames = _block_frames(b) or alloc_frames.get(addr)
        file, line, func = _site(frames)
        requested = b.get("requested_size")
        out.append(TensorRecord(bytes=as_int(b.get("size")), file=file, line=line, function=func, address=addr,
                                requested_bytes=requested if isinstance(requested, int) else None))
    return out


def _expandable(settings: Any) -> bool:
    if not isinstance(settings, dict):
        return False
    return bool(settings.get("expandable_segments"))


def _fragmentation(st: DeviceState, settings: Any) -> tuple[Finding, Recommendation] | None:
    inactive = st.reserved - st.active
    if st.reserved <= 0 or inactive <= FRAGMENTATION_SHARE * st.reserved or inactive <= FRAGMENTATION_MIN_BYTES:
        return None
    share = 100.0 * inactive / st.reserved
    message = (
        f"{fmt_bytes(inactive)} of the {fmt_bytes(st.reserved)} reserved ({share:.0f}%) is cached but unused, "
        f"in {st.inactive_blocks} free blocks (largest {fmt_bytes(st.largest_free_block)}); "
        f"only {fmt_bytes(st.allocated)} is allocated"
    )
    if _expandable(settings):
        advice = ("allocate same-sized buffers once and reuse them; free large temporaries before big "
                  "allocations (expandable_segments is already on)")
        rec_msg = "reuse buffers of the same size; expandable segments are already enabled"
    else:
        advice = "set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True so the allocator grows segments in place"
        rec_msg = "run with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to cut the cached, unusable memory"
    finding = Finding(kind=FindingKind.FRAGMENTATION, severity=Severity.WARNING, message=message, advice=advice,
                      bytes=inactive, extra={"reserved_bytes": st.reserved, "allocated_bytes": st.allocated,
                                             "largest_free_block_bytes": st.largest_free_block})
    rec = Recommendation(kind=RecommendationKind.ALLOCATOR_CONFIG, message=rec_msg,
                         suggested=None if _expandable(settings) else "expandable_segments:True")
    return finding, rec


def _oom_finding(replay: Replay, path: str) -> tuple[Finding, OomReport]:
    last = replay.ooms[-1]
    file, line, func = _site(last.frames)
    held = [
        TensorRecord(bytes=size, file=f, line=ln, function=fn)
        for size, _addr, fr in last.live_top
        for f, ln, fn in [_site(fr)]
    ]
    parts = [f"out of memory allocating {fmt_bytes(last.requested)} with {fmt_bytes(last.allocated)} allocated"]
    if last.reserved:
        parts.append(f"{fmt_bytes(last.reserved)} reserved")
    if last.device_free is not None:
        parts.append(f"{fmt_bytes(last.device_free)} free on the device")
    message = ", ".join(parts)
    if held:
        big = held[0]
        where = f" at {os.path.basename(big.file)}:{big.line}" if big.file else ""
        message += f"; the largest live allocation was {fmt_bytes(big.bytes)}{where}"
    if len(replay.ooms) > 1:
        message += f" ({len(replay.ooms)} out-of-memory errors in the trace; this is the last)"
    finding = Finding(
        kind=FindingKind.OOM, severity=Severity.ERROR, message=message, file=file, line=line,
        bytes=last.requested,
        advice="lower the batch size, free large tensors before this statement, or use mixed precision "
               "or gradient checkpointing",
        extra={"function": func} if func else {},
    )
    oom = OomReport(
        source=f"memory snapshot {os.path.basename(path)}",
        requested_bytes=last.requested,
        allocated_bytes=last.allocated,
        reserved_bytes=last.reserved,
        device_free_bytes=last.device_free,
        num_ooms=len(replay.ooms),
        file=file,
        line=line,
        largest_allocations=held,
    )
    return finding, oom


def report_from_snapshot_dict(snapshot: dict[str, Any], path: str = "snapshot.pickle") -> Report:
    """The Report for an already loaded snapshot dict (see the module docstring for the schema)."""
    segments = snapshot.get("segments")
    if not isinstance(segments, list):
        raise MemprofError(f"{path} is not a PyTorch memory snapshot (no 'segments' list)")
    traces_raw = snapshot.get("device_traces")
    traces: list[Any] = traces_raw if isinstance(traces_raw, list) else []
    states = device_states(segments)
    dev = choose_device(states, traces)
    st = states.get(dev, DeviceState(index=dev))
    trace = traces[dev] if dev < len(traces) and isinstance(traces[dev], list) else []
    settings = snapshot.get("allocator_settings")

    warnings: list[str] = []
    others = sorted((set(states) | {i for i, t in enumerate(traces) if t}) - {dev})
    if others:
        warnings.append(f"the snapshot covers devices {', '.join(f'cuda:{d}' for d in [dev, *others])}; "
                        f"this report reads cuda:{dev} only")
    replay = replay_trace(trace, st.active, st.reserved)
    if trace:
        peak = max(replay.peak_allocated, st.allocated)
    else:
        peak = st.allocated
        warnings.append("the snapshot holds no allocation history (record it with "
                        "torch.cuda.memory._record_memory_history()): the peak is the memory allocated "
                        "when the snapshot was taken")

    findings: list[Finding] = []
    recommendations: list[Recommendation] = []
    oom: OomReport | None = None
    if replay.ooms:
        finding, oom = _oom_finding(replay, str(path))
        findings.append(finding)
    frag = _fragmentation(st, settings)
    if frag:
        findings.append(frag[0])
        recommendations.append(frag[1])

    cuda = CudaStats(
        source="snapshot",
        allocated_bytes=st.allocated,
        active_bytes=st.active,
        reserved_bytes=st.reserved,
        inactive_bytes=st.reserved - st.active,
        peak_reserved_bytes=max(replay.peak_reserved, st.reserved),
        largest_free_block_bytes=st.largest_free_block,
        segments=st.segments,
        num_ooms=len(replay.ooms),
        trace_entries=len(trace),
        allocator_settings=settings if isinstance(settings, dict) else None,
    )
    duration = 0.0
    if replay.first_us is not None and replay.last_us is not None:
        duration = max(0.0, (replay.last_us - replay.first_us) / 1e6)

    return Report(
        script=str(path),
        argv=[],
        status=Status.OOM if replay.ooms else Status.OK,
        device=DeviceInfo(type="cuda", name=f"cuda:{dev}", total_bytes=None, index=dev),
        peak_bytes=int(peak),
        findings=findings,
        recommendations=recommendations,
        duration_seconds=duration,
        memprof_version=__version__,
        cuda=cuda,
        oom=oom,
        largest_tensors=_largest_blocks(st.blocks, replay.alloc_frames),
        warnings=warnings,
    )


def report_from_snapshot(path: str | os.PathLike[str]) -> Report:
    """Read the PyTorch CUDA memory snapshot pickle at ``path`` into a Report."""
    data = load_snapshot(path)
    return report_from_snapshot_dict(data, str(Path(path)))
