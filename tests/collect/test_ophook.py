"""The C++ op hook and its ledger (NativeTracker): built once, it counts exactly what the Python
tracker counts, marks the default CPU allocator's storages and watches the others from Python."""

from __future__ import annotations

import gc
import json
import time
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from memprof.collect import ophook
from memprof.collect.native import NativeTracker
from memprof.collect.storage import StorageTracker
from memprof.model.categories import ACTIVATIONS, OTHER, PARAMETERS
from memprof.session import Session, SessionConfig
from tests.conftest import run_memprof


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
    _ = [p.grad.clone() for p in conv.parameters() if p.grad is not None]


def _count(tracker: Any) -> tuple[int, int, int, list[int]]:
    tracker.start()
    try:
        tracker.begin_step(0)
        _workload()
    finally:
        tracker.stop()
    gc.collect()
    return tracker.peak, tracker.step_peak, tracker.seq, list(tracker.peak_cat)


@pytest.mark.slow
def test_the_op_hook_counts_what_the_python_tracker_counts(hook: ModuleType) -> None:
    by_python = _count(StorageTracker())
    native = NativeTracker(hook)
    by_hook = _count(native)
    assert by_hook[:2] == by_python[:2] and by_hook[3] == by_python[3]  # peak, step peak, breakdown
    # Storages seen: Python's dispatch mode holds a reference to each op's output, so autograd
    # clones a leaf's first gradient that it steals otherwise (AccumulateGrad): one storage more,
    # which the op hook, holding none, does not perturb.
    assert 0 <= by_python[2] - by_hook[2] <= 1 and by_hook[2] > 20
    assert native.live == 0 and native.count() == 0 and hook.error_count() == 0


@pytest.mark.slow
def test_marked_storages_are_known_by_their_deleter_and_counted_when_they_die(hook: ModuleType) -> None:
    tr = NativeTracker(hook)
    tr.start()
    try:
        assert tr.feed == "ophook"
        a = torch.zeros(1000)
        v = a.view(10, 100)
        v.mul_(2)
        assert tr.live == 4000 and tr.count() == 1
        del v, a
        assert tr.live == 0 and tr.count() == 0
        b = torch.zeros(1000)  # maybe at the same address as `a`: still news
        assert tr.live == 4000
        del b
        keep = [torch.ones(16) for _ in range(10)]
        for _ in range(5000):
            torch.ones(16).add_(1)
        assert tr.count() == len(keep) and tr.seq == 5012 and tr.live == 10 * 64
    finally:
        tr.stop()
    assert tr.feed is None and tr.peak == 4000
    del keep
    assert tr.live == 0  # deaths are counted after the tracker stops, as Python's weak references do
    assert hook.error_count() == 0


@pytest.mark.slow
def test_a_dead_storages_memory_is_freed_at_once(hook: ModuleType) -> None:
    """The swapped deleter frees the data with the allocator's own, at the death."""
    from memprof.collect.heap import heap_in_use_bytes

    if heap_in_use_bytes() is None:
        pytest.skip("no mallinfo2 in this C library")
    tr = NativeTracker(hook)
    tr.start()
    try:
        big = torch.ones(16 * 2**20)  # 64 MiB
        before = heap_in_use_bytes() or 0
        assert tr.count() == 1
        del big
        after = heap_in_use_bytes() or 0
    finally:
        tr.stop()
    assert before - after >= 60 * 2**20 and tr.live == 0


@pytest.mark.slow
def test_storages_of_other_allocators_are_watched_from_python(hook: ModuleType) -> None:
    """A storage the hook can't mark (here numpy's memory) keeps its deleter; Python's weak
    reference reports its death."""
    arr = np.ones(1000, dtype=np.float32)
    tr = NativeTracker(hook)
    tr.start()
    try:
        t = torch.from_numpy(arr)  # shares numpy's memory: not the default CPU allocator's
        u = t.view(10, 100) * 1  # a marked one
        tr.ensure(t)
        t.add_(1)
        assert tr.live == 8000 and tr.count() == 2
        del t
        gc.collect()
        assert tr.live == 4000 and tr.count() == 1
    finally:
        tr.stop()
    del u
    assert tr.live == 0


@pytest.mark.slow
def test_a_new_tracker_takes_over_storages_an_earlier_one_marked(hook: ModuleType) -> None:
    first = NativeTracker(hook)
    with first:
        x = torch.ones(1000)
    second = NativeTracker(hook)
    with second:
        y = x + 1  # the first never sees this one
    assert first.live == 4000 and second.live == 4000
    second.ensure(x)  # a census: the second counts x from now on, the first no more
    assert second.live == 8000 and first.live == 0
    del x
    assert second.live == 4000
    del y
    assert second.live == 0 and hook.error_count() == 0


@pytest.mark.slow
def test_copy_on_write_clones_of_marked_storages_still_work(hook: ModuleType) -> None:
    tr = NativeTracker(hook)
    with tr:
        a = torch.arange(1000.0)
    b = a._lazy_clone()  # a copy-on-write clone needs the storage's context to be its data
    b.add_(1)  # the copy materialises
    assert a[1].item() == 1.0 and b[1].item() == 2.0
    del a
    gc.collect()
    assert tr.live == 0
    del b


@pytest.mark.slow
def test_sessions_choose_the_native_tracker_unless_a_cpu_memory_limit_needs_python(hook: ModuleType,
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMPROF_OPHOOK", "auto")
    s = Session(SessionConfig(script=__file__, detail="full", publish=False)).start()
    try:
        assert isinstance(s.tracker, NativeTracker) and s.modules.tracker is s.tracker
        before = s.tracker.cat[PARAMETERS]  # models other tests left alive are adopted at the start
        lin = nn.Linear(8, 8)
        lin(torch.ones(4, 8)).sum().backward()
        made = lin.weight.untyped_storage().nbytes() + lin.bias.untyped_storage().nbytes()
        assert s.tracker.cat[PARAMETERS] - before == made
        assert s.tracker.peak_cat[ACTIVATIONS] > 0
    finally:
        s.stop()
    limited = Session(SessionConfig(script=__file__, detail="full", publish=False, memory_limit_bytes=10**9)).start()
    try:
        assert isinstance(limited.tracker, StorageTracker) and limited.tracker.feed == "dispatch"
    finally:
        limited.stop()


def test_a_failed_build_says_why_and_the_tracker_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "ophook"
    broken.mkdir()
    (broken / "bindings.cpp").write_text("this is not C++\n")
    monkeypatch.setattr(ophook, "SOURCE_DIR", broken)
    monkeypatch.setattr(ophook, "_module", None)
    monkeypatch.setattr(ophook, "_failure", None)
    monkeypatch.setenv("MEMPROF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MEMPROF_OPHOOK", "auto")
    assert ophook.load(build=False) is None and ophook.failure() is None  # not built, not asked to build
    assert ophook.load(build=True) is None
    assert ophook.failure()
    s = Session(SessionConfig(script=__file__, detail="full", publish=False)).start()
    try:
        assert isinstance(s.tracker, StorageTracker) and s.tracker.feed == "dispatch"
    finally:
        s.stop()
    assert any("op hook unavailable" in w for w in s.warnings)
    monkeypatch.setenv("MEMPROF_OPHOOK", "0")
    assert ophook.load(build=True) is None


@pytest.mark.slow
@pytest.mark.parametrize("script", ["memory_bank.py", "loss_history.py", "lingering_logits.py", "eval_no_grad.py"])
def test_whole_runs_agree_with_and_without_the_op_hook(hook: ModuleType, shared: Path, tmp_path: Path,
                                                      script: str, hook_cache: Path) -> None:
    """`memprof run --detail full`, same peak, breakdown, steps and findings from either feed."""
    results = []
    for setting in ("0", "auto"):
        out = tmp_path / f"r-{setting}.json"
        r = run_memprof("run", "-q", "--detail", "full", "--json", str(out), str(shared / "cases" / script),
                        env={"MEMPROF_OPHOOK": setting, "MEMPROF_CACHE_DIR": str(hook_cache)})
        assert r.returncode == 0, r.stderr.decode()
        rep = json.loads(out.read_text())
        results.append((
            rep["peak_bytes"], rep["breakdown_at_peak"], [(s["peak_bytes"], s["end_bytes"]) for s in rep["steps"]],
            sorted((f["kind"], f.get("variable"), f.get("line")) for f in rep["findings"]),
        ))
    assert results[0] == results[1]
    assert results[0][3], "each of these cases has findings"


def _saved_per_step(tracker: Any, pack_steps: set[int], steps: int = 5) -> list[tuple[int, int]]:
    """(activations, other) live after each step of a loop that keeps its outputs; the pack hook on
    at ``pack_steps`` only, the native tracker inferring saved storages at the others. Step 3 runs
    under no_grad (nothing saved)."""
    torch.manual_seed(0)
    lin = nn.Linear(8, 16)
    kept, out = [], []
    tracker.start()
    try:
        for i in range(steps):
            tracker.begin_step(i)
            pack = i in pack_steps
            tracker.infer_saved = not pack and getattr(tracker, "infers_saved", False)
            grad = torch.enable_grad() if i != 3 else torch.no_grad()
            with grad, torch.autograd.graph.saved_tensors_hooks(tracker.pack, lambda t: t) if pack else nullcontext():
                kept.append(lin(torch.randn(4, 8)).relu() * 2)  # addmm saves its input, mul saves the relu output
            out.append((tracker.cat[ACTIVATIONS], tracker.cat[OTHER]))
    finally:
        tracker.stop()
    return out


@pytest.mark.slow
def test_between_sampled_steps_the_ledger_infers_saved_storages_from_where_they_were_made(hook: ModuleType) -> None:
    measured = _saved_per_step(StorageTracker(), set(range(5)))
    inferred = _saved_per_step(NativeTracker(hook), {0})
    assert inferred == measured
    assert measured[2][0] > measured[1][0] > measured[0][0] and measured[3][0] == measured[2][0]  # no_grad: none
    not_inferred = NativeTracker(hook)
    assert _saved_per_step(not_inferred, {0}, steps=1) == measured[:1]
    not_inferred.infer_saved = False


class _Stop(BaseException):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("raised, expected", [(KeyboardInterrupt, KeyboardInterrupt), (_Stop, _Stop)])
def test_a_signal_handlers_exception_inside_the_hook_reaches_the_user(hook: ModuleType, raised: type,
                                                                       expected: type) -> None:
    """Ctrl+C (or memprof's SIGTERM unwinding) landing while the hook runs Python: the op can't
    raise it, so the signal is raised again and Python acts on it right after, in the user's code."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise _Stop()

    def site() -> int:
        raise raised()

    old = signal.signal(signal.SIGTERM, stop)
    # Python's own Ctrl+C handler, also where this process was started with SIGINT ignored (a
    # background job of a shell without job control).
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    ledger = hook.Ledger()
    hook.install(ledger, site, None, None)
    try:
        with pytest.raises(expected):
            torch.ones(2**14).neg()  # 64 KiB: the hook asks Python for its line
            for _ in range(100_000):  # Python acts on a pending signal at its next check
                pass
    finally:
        hook.uninstall()
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
    errors = hook.error_count()
    x = torch.ones(2**14)
    hook.install(ledger, lambda: (_ for _ in ()).throw(ValueError("a bug")), None, None)  # an ordinary error: counted
    try:
        x.neg()  # one new large storage, one call
    finally:
        hook.uninstall()
    assert hook.error_count() == errors + 1


@pytest.mark.slow
def test_the_cpu_counter_counts_every_allocation_and_free_of_the_cpu_allocator(hook: ModuleType) -> None:
    from memprof.collect.cpu_counter import CpuCounter

    counter = CpuCounter(hook)
    assert counter.start()
    try:
        base = counter.read(restart_peak=True)
        assert base is not None
        a = torch.empty(8 << 20, dtype=torch.uint8)
        live, peak = counter.read()  # type: ignore[misc]
        assert live - base[0] >= 8 << 20 and peak >= live
        del a
        live2, peak2 = counter.read(restart_peak=True)  # type: ignore[misc]
        assert live2 == base[0] and peak2 - base[0] >= 8 << 20  # the peak remembers it...
        assert counter.read() == (live2, live2)  # ...until it restarts
        # The op hook's ledger marks the counter's storages too, and their death frees them.
        tr = NativeTracker(hook)
        tr.start()
        try:
            b = torch.zeros(1000)
            assert tr.live == 4000
            del b
            assert tr.live == 0
        finally:
            tr.stop()
        now, high = counter.read()  # type: ignore[misc]
        assert now == live2 and high >= live2 + 4000  # b counted at its birth and at its death
    finally:
        counter.stop()
    assert not hook.cpu_counter_installed() and counter.read() is None


@pytest.mark.slow
def test_a_tensor_made_and_freed_inside_a_watched_step_is_in_the_peak(hook: ModuleType,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Never alive at a boundary: only a count of every allocation sees it (the CPU counter)."""
    monkeypatch.setenv("MEMPROF_OPHOOK", "auto")
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    s = Session(SessionConfig(publish=False, advise=False)).start()
    try:
        assert s.cpu_counter.active
        for i in range(60):
            loss = model(torch.ones(1, 4)).sum()
            if i == 40:  # watched: 32 MiB made and freed between two boundaries
                torch.ones(8 << 20).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            time.sleep(0.003)  # steps of 2 ms or more: a look at every boundary
    finally:
        report = s.stop()
    assert not report.steps[40].detailed
    assert report.peak_bytes >= 32 << 20, report.peak_bytes
    assert report.peak_bytes < 33 << 20  # what the tracker counted plus the temporary, no more
    assert report.steps[40].peak_bytes >= 32 << 20  # the step it was made in...
    assert all(st.peak_bytes < 1 << 20 for st in report.steps[41:])  # ...not the steps after
    assert not s.cpu_counter.active


@pytest.mark.slow
def test_between_sampled_steps_batch_scaling_is_inferred_from_where_storages_are_born(
        hook: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The op hook reads ops' inputs only on sampled steps (boxing them costs most of its time);
    between them a storage made where one was made from a scaling storage scales too: the word
    language model's oneDNN LSTM workspace (flat bytes, no batch in its shape) scales on every
    step alike (taint off there: 16 MB of the 35 MB frontier counted as fixed)."""
    import sys

    monkeypatch.setenv("MEMPROF_OPHOOK", "auto")
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "scripts"))
    from advise_models import RNNModel

    torch.manual_seed(0)
    model = RNNModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ids, y = torch.randint(0, 2048, (35, 20)), torch.randint(0, 2048, (35 * 20,))
    errors = hook.error_count()
    s = Session(SessionConfig(script=__file__, detail="full", publish=False, advise=False)).start()
    try:
        assert isinstance(s.tracker, NativeTracker)
        for _ in range(34):
            out, _ = model(ids, model.init_hidden(20))
            loss = nn.functional.nll_loss(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        s.stop()
    sys.modules.pop("advise_models", None)
    steps = {st.index: st for st in s.steps.iterations}
    sampled, inferred = steps[32], steps[33]  # every 16th step is sampled
    assert sampled.frontier and sampled.frontier == inferred.frontier, (sampled.frontier, inferred.frontier)
    fixed, scaled = inferred.frontier[0]
    assert scaled > 3 * fixed  # the workspace among what scales
    assert hook.error_count() == errors
