"""The CPU counter's Python side: "not available" is a value (no op hook, a failing one), and what
the op hook counts is read as it gives it (the counting itself: tests/collect/test_ophook.py)."""

from __future__ import annotations

from types import SimpleNamespace

from memprof.collect.cpu_counter import CpuCounter


def test_without_the_op_hook_the_counter_is_not_available() -> None:
    counter = CpuCounter(None)
    assert not counter.start() and not counter.active
    assert counter.read() is None
    counter.stop()  # nothing to stop: no error


def test_it_reads_what_the_op_hook_counts_and_gives_the_allocator_back() -> None:
    calls: list[str] = []
    state = {"live": 100, "peak": 300}

    def read(restart: bool) -> tuple[int, int]:
        out = (state["live"], state["peak"])
        if restart:
            state["peak"] = state["live"]
        return out

    hook = SimpleNamespace(install_cpu_counter=lambda: calls.append("install") or True,
                           uninstall_cpu_counter=lambda: calls.append("uninstall"), read_cpu_counter=read)
    counter = CpuCounter(hook)  # type: ignore[arg-type]
    assert counter.start()
    assert counter.read(restart_peak=True) == (100, 300)
    assert counter.read() == (100, 100)
    counter.stop()
    assert calls == ["install", "uninstall"] and counter.read() is None


def test_an_op_hook_that_fails_is_not_available() -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("no")

    hook = SimpleNamespace(install_cpu_counter=boom, uninstall_cpu_counter=boom, read_cpu_counter=boom)
    assert not CpuCounter(hook).start()  # type: ignore[arg-type]
    older = SimpleNamespace()  # built from sources without the counter
    assert not CpuCounter(older).start()  # type: ignore[arg-type]
