"""Fakes shared by the live-channel, hardware and TUI tests: recorded states, fake GPUs, a fake log."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from memprof.hw.gpu import GpuDevice, GpuProcess, GpuStatus
from memprof.live.client import LiveRun
from memprof.live.state import LiveSample, LiveState

GiB = 1024**3
MiB = 1024**2
STARTED_AT = 1_700_000_000.0
SCRIPT = "/work/shared/cases/loss_history.py"

MODULES: list[dict[str, Any]] = [
    {"name": "0", "type": "Conv2d", "parameter_bytes": 3_584, "activation_bytes": 8 * MiB, "gradient_bytes": 3_584,
     "calls": 120},
    {"name": "1", "type": "ReLU", "parameter_bytes": 0, "activation_bytes": 8 * MiB, "gradient_bytes": 0, "calls": 120},
    {"name": "2", "type": "Conv2d", "parameter_bytes": 73_984, "activation_bytes": 16 * MiB,
     "gradient_bytes": 73_984, "calls": 120},
    {"name": "3", "type": "ReLU", "parameter_bytes": 0, "activation_bytes": 16 * MiB, "gradient_bytes": 0,
     "calls": 120},
    {"name": "4", "type": "AdaptiveAvgPool2d", "parameter_bytes": 0, "activation_bytes": 256 * 1024,
     "gradient_bytes": 0, "calls": 120},
    {"name": "5", "type": "Flatten", "parameter_bytes": 0, "activation_bytes": 0, "gradient_bytes": 0, "calls": 120},
    {"name": "6", "type": "Linear", "parameter_bytes": 41_000, "activation_bytes": 2_560, "gradient_bytes": 41_000,
     "calls": 120},
]

LOSS_FINDING: dict[str, Any] = {
    "kind": "accumulated_tensor", "severity": "warning", "file": SCRIPT, "line": 29, "variable": "total_loss",
    "bytes": 1_310_720, "step": 12,
    "message": "total_loss += loss keeps every step's autograd graph alive: memory grows by ~10 KiB a step.",
    "advice": "accumulate a number: total_loss += loss.item()",
}
RECOMMENDATIONS: list[dict[str, Any]] = [
    {"kind": "batch_size", "current": 64, "suggested": 192, "budget_bytes": 8 * GiB,
     "predicted_peak_bytes": 7_600 * MiB, "message": "batch size 192 fits the 8.00 GiB budget"},
    {"kind": "mixed_precision", "predicted_peak_bytes": 30 * MiB,
     "message": "bf16 autocast would halve the activations"},
]


def make_state(
    step: int = 120,
    *,
    pid: int = 4242,
    status: str = "running",
    findings: Sequence[dict[str, Any]] = (),
    recommendations: Sequence[dict[str, Any]] = (),
    modules: Sequence[dict[str, Any]] = tuple(MODULES),
    budget: int | None = 8 * GiB,
    device: dict[str, Any] | None = None,
    script: str = SCRIPT,
    argv: Sequence[str] = ("--steps", "3000"),
    report_path: str | None = None,
) -> LiveState:
    """A plausible state of a small CPU training run after ``step`` steps (deterministic)."""
    samples = []
    n = 120
    for i in range(n):
        t = i * 0.25
        s = int(step * i / n)
        wave = (math.sin(i * 0.9) + 1) / 2  # forward/backward sawtooth-ish
        samples.append(LiveSample(t=t, bytes=int(20 * MiB + wave * 40 * MiB + i * 64 * 1024), step=s))
    peak_i = max(range(n), key=lambda i: samples[i].bytes)
    return LiveState(
        pid=pid, script=script, argv=list(argv), started_at=STARTED_AT, status=status, step=step,
        batch_size=64, current_bytes=samples[-1].bytes, peak_bytes=samples[peak_i].bytes,
        peak_step=samples[peak_i].step, budget_bytes=budget,
        device=device if device is not None else {"type": "cpu", "name": "cpu", "total_bytes": None},
        breakdown={"parameters": 118_568, "gradients": 118_568, "optimizer_state": 118_568,
                   "activations": 48 * MiB, "other": 1_310_720},
        samples=samples, step_marks=[i * 1.5 for i in range(20)], modules=[dict(m) for m in modules],
        findings=[dict(f) for f in findings], recommendations=[dict(r) for r in recommendations],
        report_path=report_path,
    )


@dataclass
class FakeGpuBackend:
    """A GPU backend with the devices you give it. ``fail``: snapshot says unavailable."""

    devices: list[GpuDevice] = field(default_factory=list)
    fail: str | None = None
    name: str = "fake"
    calls: int = 0

    def snapshot(self) -> GpuStatus:
        self.calls += 1
        if self.fail:
            return GpuStatus(backend=self.name, available=False, reason=self.fail)
        if not self.devices:
            return GpuStatus(backend=self.name, available=False, reason="no GPU (fake)")
        return GpuStatus(backend=self.name, devices=tuple(self.devices))

    def set_used(self, index: int, used_bytes: int) -> None:
        self.devices[index] = replace(self.devices[index], memory_used_bytes=used_bytes)

    def close(self) -> None:
        pass


def fake_gpus() -> FakeGpuBackend:
    return FakeGpuBackend(devices=[
        GpuDevice(index=0, name="NVIDIA H100 80GB HBM3", memory_used_bytes=41 * GiB, memory_total_bytes=80 * GiB,
                  utilization_percent=87.0, processes=(
                      GpuProcess(pid=4242, name="python loss_history.py", used_bytes=40 * GiB),
                      GpuProcess(pid=777, name="python serve.py", used_bytes=1 * GiB),
                  )),
        GpuDevice(index=1, name="NVIDIA H100 80GB HBM3", memory_used_bytes=512 * MiB, memory_total_bytes=80 * GiB,
                  utilization_percent=0.0),
    ])


class FakeLog:
    """A log source whose lines the test adds."""

    def __init__(self, lines: Sequence[str] = ()) -> None:
        self.pending = list(lines)

    def add(self, *lines: str) -> None:
        self.pending.extend(lines)

    def poll(self) -> list[str]:
        out, self.pending = self.pending, []
        return out


class FakeRuns:
    """A runs source returning what the test sets."""

    def __init__(self, states: Sequence[LiveState] = ()) -> None:
        self.states = list(states)
        self.calls = 0

    def list_runs(self) -> list[LiveRun]:
        self.calls += 1
        return [LiveRun(path=Path(f"/nonexistent/{s.pid}.sock"), state=s) for s in self.states]


class FakePynvml:
    """Enough of pynvml's functions for the NVML backend, over a list of device dicts."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[dict[str, Any]] | None = None, init_error: str | None = None) -> None:
        self.devices = devices or []
        self.init_error = init_error
        self.initialised = False
        self.shutdown = False

    def nvmlInit(self) -> None:
        if self.init_error:
            raise self.NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.devices[i]

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> bytes:
        if h.get("broken"):
            raise self.NVMLError("GPU is lost")
        return str(h["name"]).encode()  # older pynvml returned bytes

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return f"GPU-{h['name']}"

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(used=h["used"], total=h["total"], free=h["total"] - h["used"])

    def nvmlDeviceGetUtilizationRates(self, h: dict[str, Any]) -> SimpleNamespace:
        if h.get("util") is None:
            raise self.NVMLError("Not Supported")
        return SimpleNamespace(gpu=h["util"], memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, h: dict[str, Any]) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in h.get("procs", [])]

    def nvmlDeviceGetGraphicsRunningProcesses(self, h: dict[str, Any]) -> list[SimpleNamespace]:
        return []

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        return f"/usr/bin/proc{pid}"


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test with asyncio.run (no pytest-asyncio needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper
