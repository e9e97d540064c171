"""The CUDA caching allocator, behind a small interface so tests can fake it.

``CudaAllocator`` is what the session needs of ``torch.cuda``: counters, the memory history (a
bounded ring buffer of allocation sites with Python stacks) and an out-of-memory observer.
Without CUDA every call returns a "not available" value; nothing raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

COUNTERS = {
    "allocated_bytes": "allocated_bytes.all.current",
    "allocated_peak_bytes": "allocated_bytes.all.peak",
    "reserved_bytes": "reserved_bytes.all.current",
    "reserved_peak_bytes": "reserved_bytes.all.peak",
    "active_bytes": "active_bytes.all.current",
    "active_peak_bytes": "active_bytes.all.peak",
    "inactive_split_bytes": "inactive_split_bytes.all.current",
    "num_ooms": "num_ooms",
    "num_alloc_retries": "num_alloc_retries",
}


@dataclass
class CudaCounters:
    allocated_bytes: int = 0
    allocated_peak_bytes: int = 0
    reserved_bytes: int = 0
    reserved_peak_bytes: int = 0
    active_bytes: int = 0
    active_peak_bytes: int = 0
    inactive_split_bytes: int = 0
    num_ooms: int = 0
    num_alloc_retries: int = 0

    @classmethod
    def from_stats(cls, stats: dict[str, Any]) -> CudaCounters:
        return cls(**{field_: int(stats.get(key, 0)) for field_, key in COUNTERS.items()})


class CudaBackend(Protocol):
    def available(self) -> bool: ...
    def initialized(self) -> bool: ...
    def device_index(self) -> int: ...
    def device_name(self, index: int) -> str: ...
    def total_memory(self, index: int) -> int: ...
    def memory_stats(self, index: int) -> dict[str, Any]: ...
    def memory_allocated(self, index: int) -> int: ...
    def reset_peak(self, index: int) -> None: ...
    def record_history(self, enabled: bool, max_entries: int) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...
    def attach_oom_observer(self, fn: Callable[[int, int, int, int], None]) -> None: ...
    def set_memory_fraction(self, fraction: float, index: int) -> None: ...
    def mem_get_info(self, index: int) -> tuple[int, int]: ...


class TorchCuda:
    """The real ``torch.cuda``."""

    def available(self) -> bool:
        import torch

        return bool(torch.cuda.is_available())

    def initialized(self) -> bool:
        import torch

        return bool(torch.cuda.is_initialized())

    def device_index(self) -> int:
        import torch

        return int(torch.cuda.current_device())

    def device_name(self, index: int) -> str:
        import torch

        return str(torch.cuda.get_device_name(index))

    def total_memory(self, index: int) -> int:
        import torch

        return int(torch.cuda.get_device_properties(index).total_memory)

    def memory_stats(self, index: int) -> dict[str, Any]:
        import torch

        return dict(torch.cuda.memory_stats(index))

    def memory_allocated(self, index: int) -> int:
        import torch

        return int(torch.cuda.memory_allocated(index))

    def reset_peak(self, index: int) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(index)

    def record_history(self, enabled: bool, max_entries: int) -> None:
        import torch

        if enabled:
            torch.cuda.memory._record_memory_history(enabled="all", stacks="python", max_entries=max_entries)
        else:
            torch.cuda.memory._record_memory_history(enabled=None)

    def snapshot(self) -> dict[str, Any]:
        import torch

        return dict(torch.cuda.memory._snapshot())

    def attach_oom_observer(self, fn: Callable[[int, int, int, int], None]) -> None:
        import torch

        torch._C._cuda_attach_out_of_memory_observer(fn)  # type: ignore[attr-defined]

    def set_memory_fraction(self, fraction: float, index: int) -> None:
        import torch

        torch.cuda.set_per_process_memory_fraction(fraction, index)

    def mem_get_info(self, index: int) -> tuple[int, int]:
        import torch

        free, total = torch.cuda.mem_get_info(index)
        return int(free), int(total)


@dataclass
class OomEvent:
    device: int
    requested_bytes: int
    device_allocated: int
    device_free: int


@dataclass
class CudaCollector:
    """Allocator counters at step boundaries, memory history, out-of-memory events."""

    backend: CudaBackend = field(default_factory=TorchCuda)
    history_entries: int = 100_000
    index: int = 0
    active: bool = False
    history: bool = False
    ooms: list[OomEvent] = field(default_factory=list)
    steps: list[CudaCounters] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    on_oom: Callable[[OomEvent], None] | None = None

    def start(self, record_history: bool = True) -> bool:
        """Start watching if this process uses CUDA; ``False`` (not an error) otherwise."""
        try:
            if not self.backend.available():
                return False
            self.index = self.backend.device_index()
            self.active = True
            self.backend.attach_oom_observer(self._on_oom)
            if record_history:
                self.backend.record_history(True, self.history_entries)
                self.history = True
        except Exception as e:  # a profiler must not fail the run over its own instrumentation
            self.errors.append(f"CUDA collector: {e}")
        return self.active

    def _on_oom(self, device: int, alloc: int, device_allocated: int, device_free: int) -> None:
        event = OomEvent(device, alloc, device_allocated, device_free)
        self.ooms.append(event)
        if self.on_oom is not None:
            try:
                self.on_oom(event)
            except Exception:
                pass

    def counters(self) -> CudaCounters | None:
        if not self.active:
            return None
        try:
            return CudaCounters.from_stats(self.backend.memory_stats(self.index))
        except Exception as e:
            self.errors.append(f"CUDA counters: {e}")
            return None

    def allocated(self) -> int:
        return self.backend.memory_allocated(self.index) if self.active else 0

    def on_step(self) -> CudaCounters | None:
        c = self.counters()
        if c is not None:  # the last only: a run's length must not grow memprof's memory
            self.steps[:] = [c]
        return c

    def snapshot(self) -> dict[str, Any] | None:
        if not self.history:
            return None
        try:
            return self.backend.snapshot()
        except Exception as e:
            self.errors.append(f"CUDA snapshot: {e}")
            return None

    def device(self) -> tuple[str, int] | None:
        if not self.active:
            return None
        try:
            return self.backend.device_name(self.index), self.backend.total_memory(self.index)
        except Exception:
            return None

    def cap(self, limit_bytes: int) -> None:
        """--memory-limit: let the allocator use at most ``limit_bytes`` of the device."""
        total = self.backend.total_memory(self.index)
        self.backend.set_memory_fraction(min(1.0, limit_bytes / total), self.index)

    def stop(self) -> None:
        if self.history:
            try:
                self.backend.record_history(False, 0)
            except Exception:
                pass
            self.history = False
