"""What a PyTorch memory snapshot held: each device's state from its segments, and the replay of
its trace (peak allocated and reserved bytes, the out-of-memory events). The schema read is in
:mod:`memprof.report.snapshot`'s docstring.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any


def as_int(value: Any) -> int:
    """A snapshot's number, 0 when it is missing or not a number."""
    return int(value) if isinstance(value, (int, float)) else 0


@dataclass
class OomEvent:
    index: int
    requested: int
    device_free: int | None
    allocated: int  # replayed, including the baseline
    reserved: int
    frames: Any
    time_us: int | None
    live_top: list[tuple[int, int, Any]] = field(default_factory=list)  # (size, addr, frames)


@dataclass
class Replay:
    peak_allocated: int
    peak_reserved: int
    baseline: int
    ooms: list[OomEvent]
    alloc_frames: dict[int, Any]
    entries: int
    first_us: int | None
    last_us: int | None


def replay_trace(trace: list[Any], end_active: int, end_reserved: int) -> Replay:
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
        size = as_int(e.get("size"))
        t = e.get("time_us")
        if isinstance(t, int) and t > 0:
            first_us = t if first_us is None else first_us
            last_us = t
        if action == "alloc":
            delta += size
            addr = as_int(e.get("addr"))
            live[addr] = (size, e.get("frames"))
            alloc_frames[addr] = e.get("frames")
            hi = max(hi, delta)
        elif action == "free_completed":
            delta -= size
            live.pop(as_int(e.get("addr")), None)
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
        OomEvent(index=i, requested=req, device_free=free, allocated=baseline + d, reserved=rbaseline + rd,
                  frames=fr, time_us=t, live_top=top)
        for i, req, free, d, rd, fr, t, top in oom_raw
    ]
    return Replay(peak_allocated=baseline + hi, peak_reserved=rbaseline + rhi, baseline=baseline, ooms=ooms,
                   alloc_frames=alloc_frames, entries=len(trace), first_us=first_us, last_us=last_us)


@dataclass
class DeviceState:
    index: int
    reserved: int = 0
    allocated: int = 0
    active: int = 0
    segments: int = 0
    largest_free_block: int = 0
    inactive_blocks: int = 0
    blocks: list[dict[str, Any]] = field(default_factory=list)  # live blocks


def device_states(segments: list[Any]) -> dict[int, DeviceState]:
    states: dict[int, DeviceState] = {}
    for seg in segments:
        if not isinstance(seg, dict):
            continue
        dev = as_int(seg.get("device"))
        st = states.setdefault(dev, DeviceState(index=dev))
        st.segments += 1
        st.reserved += as_int(seg.get("total_size"))
        blocks = seg.get("blocks")
        if not isinstance(blocks, list) or not blocks:
            st.allocated += as_int(seg.get("allocated_size"))
            st.active += as_int(seg.get("active_size") or seg.get("allocated_size"))
            continue
        for b in blocks:
            if not isinstance(b, dict):
                continue
            size = as_int(b.get("size"))
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


def choose_device(states: dict[int, DeviceState], traces: list[Any]) -> int:
    candidates = set(states) | {i for i, t in enumerate(traces) if t}
    if not candidates:
        return 0

    def key(d: int) -> tuple[int, int]:
        trace = traces[d] if d < len(traces) and isinstance(traces[d], list) else []
        return (states[d].reserved if d in states else 0, len(trace))

    return max(sorted(candidates), key=key)
