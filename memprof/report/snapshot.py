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
kept in ``report.cuda["allocator_settings"]``.

What the Report holds
---------------------
``peak_bytes``: the peak allocated bytes over the trace (see the anchoring below), or the bytes
allocated at the snapshot when there is no trace. ``cuda``: ``allocated_bytes``,
``active_bytes``, ``reserved_bytes``, ``inactive_bytes`` (cached, unused), ``peak_reserved_bytes``,
``segments``, ``num_ooms``, ``trace_entries``. ``largest_tensors``: the largest live blocks with
their first user frame. Findings: ``fragmentation`` (warning) when the cached, unused bytes are
over 30% of reserved and over 256 MiB; ``oom`` (error) when the trace holds an ``oom`` action,
with what was allocated then and the largest live allocations of the recorded history.

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
- "User frame" is judged by path patterns (``/torch/``, ``/memprof/``, site-packages, the
  standard library, C++ sources), since the snapshot may come from another machine.
- ``device.total_bytes`` is unknown (the snapshot does not hold it).
"""

from __future__ import annotations

import heapq
import io
import os
import pickle
import pickletools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memprof.errors import MemprofError
from memprof.report.model import (
    DeviceInfo,
    Finding,
    FindingKind,
    Recommendation,
    RecommendationKind,
    Report,
    Severity,
    Status,
)
from memprof.units import fmt_bytes

MiB = 1024**2
FRAGMENTATION_SHARE = 0.30
FRAGMENTATION_MIN_BYTES = 256 * MiB
LARGEST_BLOCKS = 10

_PICKLE_PEEK = 64
_ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"),
                    ("builtins", "complex")}

_INTERNAL = re.compile(
    r"([\\/](torch|memprof|site-packages|dist-packages|_pytest|pluggy)[\\/])"
    r"|([\\/]lib[\\/]python\d+(\.\d+)?[\\/])"
    r"|(\.(cpp|cc|cxx|c|h|hpp|cu|cuh|so)$)"
)
_LIBRARY = re.compile(r"[\\/](site-packages|dist-packages)[\\/]|[\\/]lib[\\/]python\d+(\.\d+)?[\\/]")
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


def is_user_filename(filename: str) -> bool:
    if not filename or filename.startswith("<frozen") or filename in ("??", "<unknown>"):
        return False
    return not _INTERNAL.search(filename)


def user_frame(frames: Any) -> dict[str, Any] | None:
    """The innermost frame of the user's code: not torch, memprof, a package, the stdlib or C++.

    Falls back to the innermost frame outside torch and memprof (e.g. a library's) when no frame
    is the user's.
    """
    if not isinstance(frames, list):
        return None
    fallback = None
    for fr in frames:
        if not isinstance(fr, dict):
            continue
        name = str(fr.get("filename") or "")
        if is_user_filename(name):
            return fr
        if (fallback is None and name and name != "??" and not name.startswith("<frozen")
                and not _TORCH_OR_MEMPROF.search(name) and _LIBRARY.search(name)):
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


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) else 0


# ----------------------------------------------------------------------------------------- replay


@dataclass
class _OomEvent:
    index: int
    requested: int
    device_free: int | None
    allocated: int  # replayed, including the baseline
    reserved: int
    frames: Any
    time_us: int | None
    live_top: list[tuple[int, int, Any]] = field(default_factory=list)  # (size, addr, frames)


@dataclass
class _Replay:
    peak_allocated: int
    peak_reserved: int
    baseline: int
    ooms: list[_OomEvent]
    alloc_frames: dict[int, Any]
    entries: int
    first_us: int | None
    last_us: int | None


def _replay(trace: list[Any], end_active: int, end_reserved: int) -> _Replay:
    """Peak allocated/reserved over ``trace``, anchored on the bytes active at the snapshot."""
    delta = lo = hi = 0
    rdelta = rlo = rhi = 0
    live: dict[int, tuple[int, Any]] = {}
    alloc_frames: dict[int, Any] = {}
    oom_raw: list[tuple[int, int, int | None, int, int, Any, int | None, list[tuple[int, int, Any]]]] = []
    first_us = last_us = None
    for i, e in enumerate(trace):
        if not isinstance(e, dict):
            continue
        action = e.get("action")
        size = _int(e.get("size"))
        t = e.get("time_us")
        if isinstance(t, int) and t > 0:
            first_us = t if first_us is None else first_us
            last_us = t
        if action == "alloc":
            delta += size
            addr = _int(e.get("addr"))
            live[addr] = (size, e.get("frames"))
            alloc_frames[addr] = e.get("frames")
            hi = max(hi, delta)
        elif action == "free_completed":
            delta -= size
            live.pop(_int(e.get("addr")), None)
            lo = min(lo, delta)
        elif action in ("segment_alloc", "segment_map"):
            rdelta += size
            rhi = max(rhi, rdelta)
        elif action in ("segment_free", "segment_unmap"):
            rdelta -= size
            rlo = min(rlo, rdelta)
        elif action == "oom":
            top = heapq.nlargest(5, ((s, a, fr) for a, (s, fr) in live.items()), key=lambda x: x[0])
            dev_free = e.get("device_free")
            oom_raw.append((i, size, dev_free if isinstance(dev_free, int) else None, delta, rdelta,
                            e.get("frames"), t if isinstance(t, int) else None, top))
    # The bytes before the trace: what makes the replay end at the snapshot's state, but never
    # less than what keeps every point of the replay non-negative.
    baseline = max(end_active - delta, -lo, 0)
    rbaseline = max(end_reserved - rdelta, -rlo, 0)
    ooms = [
        _OomEvent(index=i, requested=req, device_free=free, allocated=baseline + d, reserved=rbaseline + rd,
                  frames=fr, time_us=t, live_top=top)
        for i, req, free, d, rd, fr, t, top in oom_raw
    ]
    return _Replay(peak_allocated=baseline + hi, peak_reserved=rbaseline + rhi, baseline=baseline, ooms=ooms,
                   alloc_frames=alloc_frames, entries=len(trace), first_us=first_us, last_us=last_us)


# ----------------------------------------------------------------------------------------- report


@dataclass
class _DeviceState:
    index: int
    reserved: int = 0
    allocated: int = 0
    active: int = 0
    segments: int = 0
    largest_free_block: int = 0
    inactive_blocks: int = 0
    blocks: list[dict[str, Any]] = field(default_factory=list)  # live blocks


def _device_states(segments: list[Any]) -> dict[int, _DeviceState]:
    states: dict[int, _DeviceState] = {}
    for seg in segments:
        if not isinstance(seg, dict):
            continue
        dev = _int(seg.get("device"))
        st = states.setdefault(dev, _DeviceState(index=dev))
        st.segments += 1
        st.reserved += _int(seg.get("total_size"))
        blocks = seg.get("blocks")
        if not isinstance(blocks, list) or not blocks:
            st.allocated += _int(seg.get("allocated_size"))
            st.active += _int(seg.get("active_size") or seg.get("allocated_size"))
            continue
        for b in blocks:
            if not isinstance(b, dict):
                continue
            size = _int(b.get("size"))
            state = str(b.get("state", ""))
            if state == "active_allocated":
                st.allocated += size
                st.active += size
                st.blocks.append(b)
            elif state.startswith("active"):
                st.active += size
            else:
                st.inactive_blocks += 1
                st.largest_free_block = max(st.largest_free_block, size)
    return states


def _choose_device(states: dict[int, _DeviceState], traces: list[Any]) -> int:
    candidates = set(states) | {i for i, t in enumerate(traces) if t}
    if not candidates:
        return 0

    def key(d: int) -> tuple[int, int]:
        trace = traces[d] if d < len(traces) and isinstance(traces[d], list) else []
        return (states[d].reserved if d in states else 0, len(trace))

    return max(sorted(candidates), key=key)


def _largest_blocks(blocks: list[dict[str, Any]], alloc_frames: dict[int, Any]) -> list[dict[str, Any]]:
    out = []
    for b in heapq.nlargest(LARGEST_BLOCKS, blocks, key=lambda b: _int(b.get("size"))):
        addr = _int(b.get("address"))
        frames = _block_frames(b) or alloc_frames.get(addr)
        file, line, func = _site(frames)
        entry: dict[str, Any] = {"bytes": _int(b.get("size")), "shape": None, "dtype": None, "category": None,
                                 "file": file, "line": line, "function": func, "address": addr}
        if isinstance(b.get("requested_size"), int):
            entry["requested_bytes"] = b["requested_size"]
        out.append(entry)
    return out


def _expandable(settings: Any) -> bool:
    if not isinstance(settings, dict):
        return False
    return bool(settings.get("expandable_segments"))


def _fragmentation(st: _DeviceState, settings: Any) -> tuple[Finding, Recommendation] | None:
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


def _oom_finding(replay: _Replay, path: str) -> tuple[Finding, dict[str, Any]]:
    last = replay.ooms[-1]
    file, line, func = _site(last.frames)
    held: list[dict[str, Any]] = [
        {"bytes": size, "file": f, "line": ln, "function": fn}
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
        where = f" at {os.path.basename(big['file'])}:{big['line']}" if big["file"] else ""
        message += f"; the largest live allocation was {fmt_bytes(big['bytes'])}{where}"
    if len(replay.ooms) > 1:
        message += f" ({len(replay.ooms)} out-of-memory errors in the trace; this is the last)"
    finding = Finding(
        kind=FindingKind.OOM, severity=Severity.ERROR, message=message, file=file, line=line,
        bytes=last.requested,
        advice="lower the batch size, free large tensors before this statement, or use mixed precision "
               "or gradient checkpointing",
        extra={"function": func} if func else {},
    )
    oom: dict[str, Any] = {
        "requested_bytes": last.requested,
        "allocated_bytes": last.allocated,
        "reserved_bytes": last.reserved,
        "device_free_bytes": last.device_free,
        "file": file,
        "line": line,
        "num_ooms": len(replay.ooms),
        "largest_allocations": held,
        "source": f"memory snapshot {os.path.basename(path)}",
    }
    return finding, oom


def report_from_snapshot_dict(snapshot: dict[str, Any], path: str = "snapshot.pickle") -> Report:
    """The Report for an already loaded snapshot dict (see the module docstring for the schema)."""
    from memprof import __version__

    segments = snapshot.get("segments")
    if not isinstance(segments, list):
        raise MemprofError(f"{path} is not a PyTorch memory snapshot (no 'segments' list)")
    traces_raw = snapshot.get("device_traces")
    traces: list[Any] = traces_raw if isinstance(traces_raw, list) else []
    states = _device_states(segments)
    dev = _choose_device(states, traces)
    st = states.get(dev, _DeviceState(index=dev))
    trace = traces[dev] if dev < len(traces) and isinstance(traces[dev], list) else []
    settings = snapshot.get("allocator_settings")

    warnings: list[str] = []
    others = sorted((set(states) | {i for i, t in enumerate(traces) if t}) - {dev})
    if others:
        warnings.append(f"the snapshot covers devices {', '.join(f'cuda:{d}' for d in [dev, *others])}; "
                        f"this report reads cuda:{dev} only")
    replay = _replay(trace, st.active, st.reserved)
    if trace:
        peak = max(replay.peak_allocated, st.allocated)
    else:
        peak = st.allocated
        warnings.append("the snapshot holds no allocation history (record it with "
                        "torch.cuda.memory._record_memory_history()): the peak is the memory allocated "
                        "when the snapshot was taken")

    findings: list[Finding] = []
    recommendations: list[Recommendation] = []
    oom: dict[str, Any] | None = None
    if replay.ooms:
        finding, oom = _oom_finding(replay, str(path))
        findings.append(finding)
    frag = _fragmentation(st, settings)
    if frag:
        findings.append(frag[0])
        recommendations.append(frag[1])

    cuda: dict[str, Any] = {
        "source": "snapshot",
        "allocated_bytes": st.allocated,
        "active_bytes": st.active,
        "reserved_bytes": st.reserved,
        "inactive_bytes": st.reserved - st.active,
        "peak_reserved_bytes": max(replay.peak_reserved, st.reserved),
        "largest_free_block_bytes": st.largest_free_block,
        "segments": st.segments,
        "num_ooms": len(replay.ooms),
        "trace_entries": len(trace),
    }
    if isinstance(settings, dict):
        cuda["allocator_settings"] = settings
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
