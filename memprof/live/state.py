"""What a profiled run publishes while it runs: one JSON-serialisable snapshot, sent whole.

Both ends (the publisher inside the profiled process, the TUI in another process) share only
this schema, so the UI never imports the collectors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LIVE_SCHEMA = "memprof.live/1"


@dataclass
class LiveSample:
    """One point of the memory timeline."""

    t: float  # seconds since the run started
    bytes: int
    step: int


@dataclass
class LiveState:
    pid: int
    script: str
    argv: list[str] = field(default_factory=list)
    started_at: float = 0.0  # unix time
    status: str = "running"  # running | ok | error | oom | interrupted
    step: int = 0
    phase: str = "train"
    batch_size: int | None = None
    current_bytes: int = 0
    peak_bytes: int = 0
    peak_step: int | None = None
    budget_bytes: int | None = None
    device: dict[str, Any] = field(default_factory=dict)  # DeviceInfo as a dict
    breakdown: dict[str, int] = field(default_factory=dict)  # category -> bytes at the peak
    samples: list[LiveSample] = field(default_factory=list)  # recent timeline, bounded
    step_marks: list[float] = field(default_factory=list)  # t of recent step boundaries
    modules: list[dict[str, Any]] = field(default_factory=list)  # ModuleRecord dicts
    findings: list[dict[str, Any]] = field(default_factory=list)  # Finding dicts (report JSON shape)
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    report_path: str | None = None
    schema: str = LIVE_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LiveState:
        d = dict(d)
        d["samples"] = [LiveSample(**s) for s in d.get("samples", [])]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})
