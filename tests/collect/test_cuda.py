"""The CUDA collector against a fake allocator (no GPU needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memprof.collect.cuda import CudaCollector, CudaCounters


class FakeCuda:
    def __init__(self, available: bool = True) -> None:
        self._available = available
        self.stats: dict[str, Any] = {"allocated_bytes.all.current": 100, "allocated_bytes.all.peak": 300,
                                      "reserved_bytes.all.current": 1 << 30, "num_alloc_retries": 2}
        self.history: list[tuple[bool, int]] = []
        self.observer: Callable[[int, int, int, int], None] | None = None
        self.fraction: float | None = None

    def available(self) -> bool: return self._available
    def initialized(self) -> bool: return True
    def device_index(self) -> int: return 0
    def device_name(self, index: int) -> str: return "Fake GPU"
    def total_memory(self, index: int) -> int: return 8 << 30
    def memory_stats(self, index: int) -> dict[str, Any]: return dict(self.stats)
    def memory_allocated(self, index: int) -> int: return int(self.stats["allocated_bytes.all.current"])
    def reset_peak(self, index: int) -> None: self.stats["allocated_bytes.all.peak"] = 0
    def record_history(self, enabled: bool, max_entries: int) -> None: self.history.append((enabled, max_entries))
    def snapshot(self) -> dict[str, Any]: return {"segments": [], "device_traces": []}
    def attach_oom_observer(self, fn: Callable[[int, int, int, int], None]) -> None: self.observer = fn
    def set_memory_fraction(self, fraction: float, index: int) -> None: self.fraction = fraction
    def mem_get_info(self, index: int) -> tuple[int, int]: return (1 << 30, 8 << 30)


def test_without_cuda_nothing_starts_and_nothing_raises() -> None:
    c = CudaCollector(backend=FakeCuda(available=False))
    assert c.start() is False
    assert c.counters() is None and c.snapshot() is None and c.device() is None and c.allocated() == 0


def test_counters_history_and_oom_observer() -> None:
    fake = FakeCuda()
    c = CudaCollector(backend=fake, history_entries=1234)
    events = []
    c.on_oom = events.append
    assert c.start() is True
    assert fake.history == [(True, 1234)]
    counters = c.on_step()
    assert isinstance(counters, CudaCounters)
    assert counters.allocated_peak_bytes == 300 and counters.reserved_bytes == 1 << 30
    assert counters.num_alloc_retries == 2
    assert fake.observer is not None
    fake.observer(0, 4096, 100, 0)
    assert events and events[0].requested_bytes == 4096
    assert c.device() == ("Fake GPU", 8 << 30)
    c.cap(2 << 30)
    assert fake.fraction == 0.25
    c.stop()
    assert fake.history[-1] == (False, 0)


def test_backend_errors_become_messages() -> None:
    fake = FakeCuda()

    def broken(index: int) -> dict[str, Any]:
        raise RuntimeError("driver gone")

    fake.memory_stats = broken  # type: ignore[method-assign]
    c = CudaCollector(backend=fake)
    c.start()
    assert c.counters() is None
    assert any("driver gone" in e for e in c.errors)
