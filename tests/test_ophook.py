"""The C++ op hook: built once, and the tracker counts exactly what its Python dispatch mode counts."""

from __future__ import annotations

import gc
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from memprof.collect import ophook
from memprof.collect.storage import StorageTracker
from tests.conftest import run_memprof

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "c++")) is None or shutil.which("ninja") is None,
    reason="no C++ compiler or ninja: memprof runs its Python dispatch mode instead",
)


@pytest.fixture(scope="session")
def hook(cache_dir: Path) -> ModuleType:
    """The op hook, built into the tests' cache (about half a minute, once per test run). The
    environment is put back at once: other tests keep the dispatch mode (conftest)."""
    saved = {k: os.environ.get(k) for k in ("MEMPROF_CACHE_DIR", "MEMPROF_OPHOOK")}
    os.environ["MEMPROF_CACHE_DIR"] = str(cache_dir)
    os.environ["MEMPROF_OPHOOK"] = "auto"
    try:
        module = ophook.load(build=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert module is not None, f"the op hook did not build: {ophook.failure()}"
    return module


def _workload() -> None:
    """Views, in-place ops, composite ops (normalize, cross_entropy), ops returning lists (split),
    a convolution whose backward makes scratch tensors of its own, frees along the way."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, padding=1)
    lin = nn.Linear(8, 4)
    x = torch.randn(4, 3, 16, 16)
    h = conv(x).relu()
    v = h.view(4, 8, -1).mean(-1)
    v.add_(1)
    z = nn.functional.normalize(lin(v), dim=1)
    parts = z.split(2)
    loss = nn.functional.cross_entropy(torch.cat(parts), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    del h, parts
    _ = [p.grad.clone() for p in conv.parameters()]


def _count(feed: Callable[[StorageTracker], None], tracker: StorageTracker) -> tuple[int, int, int]:
    feed(tracker)
    try:
        tracker.begin_step(0)
        _workload()
    finally:
        tracker.stop()
    gc.collect()
    return tracker.peak, tracker.step_peak, tracker.seq


@needs_compiler
def test_the_op_hook_counts_what_the_dispatch_mode_counts(hook: ModuleType) -> None:
    by_mode = _count(StorageTracker.start, StorageTracker())
    hooked = StorageTracker(hook)
    by_hook = _count(StorageTracker.start, hooked)
    assert by_hook == by_mode  # peak, step peak and the number of storages seen
    assert by_mode[2] > 20
    assert hooked.live == 0 and hook.error_count() == 0


@needs_compiler
def test_the_op_hook_feeds_the_tracker_and_lets_dead_storages_go(hook: ModuleType) -> None:
    tr = StorageTracker(hook)
    tr.start()
    try:
        assert tr.feed == "ophook"
        a = torch.zeros(1000)
        v = a.view(10, 100)
        v.mul_(2)
        assert tr.live == 4000
        known = hook.known_count()
        del v, a
        assert tr.live == 0 and hook.known_count() == known - 1
        b = torch.zeros(1000)  # maybe at the same address as `a`: still news
        assert tr.live == 4000
        del b
    finally:
        tr.stop()
    assert tr.feed is None and tr.peak == 4000


@needs_compiler
def test_the_op_hooks_table_of_reported_storages_lets_dead_ones_go(hook: ModuleType) -> None:
    """Thousands of short-lived storages: the table keeps weak references, swept as it grows, and
    every one of them is still counted (an address freed and reused is news)."""
    tr = StorageTracker(hook)
    tr.start()
    try:
        keep = [torch.ones(16) for _ in range(10)]
        for _ in range(5000):
            torch.ones(16).add_(1)
        assert hook.known_count() == len(keep)
        assert tr.seq == 5010 and tr.live == 10 * 64
    finally:
        tr.stop()
    assert hook.error_count() == 0


@needs_compiler
def test_a_dead_storages_memory_is_freed_at_once_while_the_table_holds_its_entry(hook: ModuleType) -> None:
    """The table's weak reference keeps only the storage's shell: its data goes when it dies."""
    from memprof.collect.storage import heap_in_use_bytes

    if heap_in_use_bytes() is None:
        pytest.skip("no mallinfo2 in this C library")
    tr = StorageTracker(hook)
    tr.start()
    try:
        big = torch.ones(16 * 2**20)  # 64 MiB
        before = heap_in_use_bytes() or 0
        assert hook.known_count() >= 1
        del big
        after = heap_in_use_bytes() or 0
    finally:
        tr.stop()
    assert before - after >= 60 * 2**20


@needs_compiler
def test_a_memory_limit_uses_the_dispatch_mode(hook: ModuleType) -> None:
    tr = StorageTracker(hook)
    tr.limit = 1000
    tr.start()
    try:
        assert tr.feed == "dispatch"
        with pytest.raises(torch.OutOfMemoryError):
            torch.zeros(1000)
    finally:
        tr.stop()


def test_a_failed_build_says_why_and_the_tracker_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "_ophook.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(ophook, "SOURCE", broken)
    monkeypatch.setattr(ophook, "_module", None)
    monkeypatch.setattr(ophook, "_failure", None)
    monkeypatch.setenv("MEMPROF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MEMPROF_OPHOOK", "auto")
    assert ophook.load(build=False) is None and ophook.failure() is None  # not built, not asked to build
    assert ophook.load(build=True) is None
    assert ophook.failure()
    tr = StorageTracker(None)
    tr.start()
    assert tr.feed == "dispatch"
    tr.stop()
    monkeypatch.setenv("MEMPROF_OPHOOK", "0")
    assert ophook.load(build=True) is None


@needs_compiler
@pytest.mark.slow
@pytest.mark.parametrize("script", ["memory_bank.py", "loss_history.py", "lingering_logits.py"])
def test_whole_runs_agree_with_and_without_the_op_hook(hook: ModuleType, shared: Path, tmp_path: Path,
                                                      script: str, cache_dir: Path) -> None:
    """`memprof run --detail full`, same peak, breakdown, steps and findings from either feed."""
    results = []
    for setting in ("0", "auto"):
        out = tmp_path / f"r-{setting}.json"
        r = run_memprof("run", "-q", "--detail", "full", "--json", str(out), str(shared / "cases" / script),
                        env={"MEMPROF_OPHOOK": setting, "MEMPROF_CACHE_DIR": str(cache_dir)})
        assert r.returncode == 0, r.stderr.decode()
        rep = json.loads(out.read_text())
        results.append((
            rep["peak_bytes"], rep["breakdown_at_peak"], [(s["peak_bytes"], s["end_bytes"]) for s in rep["steps"]],
            sorted((f["kind"], f.get("variable"), f.get("line")) for f in rep["findings"]),
        ))
    assert results[0] == results[1]
    assert results[0][3], "each of these cases has findings"


class _Stop(BaseException):
    pass


@needs_compiler
@pytest.mark.parametrize("raised, expected", [(KeyboardInterrupt, KeyboardInterrupt), (_Stop, _Stop)])
def test_a_signal_handlers_exception_inside_the_hook_reaches_the_user(hook: ModuleType, raised: type,
                                                                       expected: type) -> None:
    """Ctrl+C (or memprof's SIGTERM unwinding) landing while the hook runs Python: the op can't
    raise it, so the signal is raised again and Python acts on it right after, in the user's code."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise _Stop()

    def seen(*args: object) -> bool:
        raise raised()

    old = signal.signal(signal.SIGTERM, stop)
    hook.install(seen)
    try:
        with pytest.raises(expected):
            torch.ones(3).neg()
            for _ in range(100_000):  # Python acts on a pending signal at its next check
                pass
    finally:
        hook.uninstall()
        signal.signal(signal.SIGTERM, old)
    errors = hook.error_count()
    x = torch.ones(3)
    hook.install(lambda *a: (_ for _ in ()).throw(ValueError("a bug")))  # an ordinary error: counted
    try:
        x.neg()  # one new storage, one call
    finally:
        hook.uninstall()
    assert hook.error_count() == errors + 1
