"""The census of frames and graphs, and the forward tracker (collect/census.py, graphs.py)."""

from __future__ import annotations

import collections
import gc
import sys
import time
import weakref
from pathlib import Path

import torch
from torch import nn

from memprof.collect import census as census_mod
from memprof.collect import holders
from memprof.collect.census import census, names_of_storages
from memprof.collect.graphs import ForwardTracker
from memprof.collect.storage import StorageTracker
from memprof.model.run import ForwardRecord


def _obs(name: str) -> object:
    found = [o for o in census(sys._getframe(1)) if o.path == name]
    assert found, name
    return found[0]


def test_containers_tensors_and_graph_history() -> None:
    w = torch.ones(4, requires_grad=True)
    history = [w + 2, w + 3]
    total = (w * 2).sum() + (w * 3).sum()
    plain = torch.zeros(10)
    h = _obs("history")
    assert h.is_container and h.tensors == 2 and h.bytes == 32
    assert h.graph.graphs == 2 and h.graph.saved_bytes == 0  # adding a number saves nothing
    t = _obs("total")
    assert not t.is_container and t.graph.nodes >= 3
    p = _obs("plain")
    assert p.bytes == 40 and p.graph.graphs == 0
    del history, total, plain


def test_saved_tensors_are_seen_until_backward_frees_them() -> None:
    x = torch.randn(8, 16, requires_grad=True)
    y = (x.exp() * x).sum()
    before = _obs("y")
    assert before.graph.saved_bytes >= 8 * 16 * 4
    y.backward()
    after = _obs("y")
    assert after.graph.saved_bytes == 0


def test_self_attributes_of_user_objects() -> None:
    class Holder:
        def __init__(self) -> None:
            self.kept = [torch.ones(3), torch.ones(3)]

    holder = Holder()
    obs = [o for o in census(sys._getframe()) if o.path == "holder.kept"]
    assert obs and obs[0].tensors == 2
    del holder


def test_names_of_storages_finds_the_variable() -> None:
    logits = torch.ones(100)
    other = torch.ones(5)
    key = logits.untyped_storage()._cdata
    names = names_of_storages(sys._getframe(), {key})
    assert names[key][0] == "logits"
    del other


def test_forward_tracker_backprop_and_dropped_graphs() -> None:
    dropped: list[ForwardRecord] = []
    backed: list[ForwardRecord] = []
    ft = ForwardTracker(dropped.append, backed.append)
    model = nn.Linear(4, 4)
    out = model(torch.randn(2, 4))
    rec = ForwardRecord(module="m", site=("f.py", 1), step=0, phase="train")
    assert ft.watch(out, rec)
    out.sum().backward()
    assert rec.backpropagated and backed == [rec]
    del out
    gc.collect()
    assert rec.dead and not dropped or dropped == [rec]
    out2 = model(torch.randn(2, 4))
    rec2 = ForwardRecord(module="m", site=("f.py", 2), step=1, phase="eval")
    ft.watch(out2, rec2)
    del out2
    gc.collect()
    assert rec2.dead and not rec2.backpropagated and rec2 in dropped
    with torch.no_grad():
        assert ft.watch(model(torch.randn(2, 4)), ForwardRecord("m", None, 2, "eval")) is False


# -- holders at any depth (collect/holders.py) -------------------------------------------------


class _Callback:
    def __init__(self) -> None:
        self.y_preds_ = [torch.ones(4), torch.ones(4)]
        self.last = torch.ones(300)


class _Net:
    def __init__(self) -> None:
        self.callbacks = [object(), _Callback()]
        self.hooks = {"end": [self.callbacks[1].__init__]}


def _paths() -> dict[str, object]:
    return {o.path: o for o in census(sys._getframe(1))}


def test_objects_in_containers_below_the_frames_are_walked() -> None:
    net = _Net()
    paths = _paths()
    assert "net.callbacks[1].y_preds_" in paths and "net.callbacks[1].last" in paths
    obs = paths["net.callbacks[1].y_preds_"]
    assert obs.owners == ((__file__, "_Callback"),) and obs.attr == "y_preds_" and obs.expr == "net.callbacks[1].y_preds_"
    assert obs.container == "list" and obs.tensors == 2
    del net


def test_closures_generators_module_buffers_and_hooks() -> None:
    def make() -> object:
        kept = [torch.ones(3)]

        def log() -> int:
            return len(kept)

        return log

    def gen() -> object:
        inside = torch.ones(5)
        yield inside

    class BN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("running_mean", torch.zeros(6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    log, g = make(), gen()
    next(g)
    model = nn.Sequential(nn.Linear(2, 2), BN())
    handle = model[0].register_forward_hook(_collecting_hook())  # only the hook's closure holds the list
    model(torch.randn(1, 2))
    paths = _paths()
    kept = paths["kept (in closure log)"]
    assert (kept.function, kept.expr, kept.running) == ("log", "kept", False)
    inside = paths["inside (in generator g)"]
    assert inside.function == "gen" and inside.running and inside.line == gen.__code__.co_firstlineno + 2
    assert "model.1.running_mean" in paths and paths["model.1.running_mean"].owners[0][1] == "BN"
    assert "feats (in closure model.0._forward_hooks[0])" in paths
    handle.remove()
    del log


def _collecting_hook() -> object:
    feats: list[torch.Tensor] = []
    return lambda m, i, o: feats.append(o)


def test_globals_of_the_users_other_modules(tmp_path: Path) -> None:
    (tmp_path / "census_cache_mod.py").write_text(
        "import torch\nCACHE = {0: torch.ones(7)}\ndef touch(f):\n    return f()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import census_cache_mod

        found = census_cache_mod.touch(lambda: _paths())  # a frame of that module on the stack
        assert "CACHE (in module census_cache_mod)" in found
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("census_cache_mod", None)


def test_the_op_seen_the_stamps_and_the_holders_one_graph_reaches() -> None:
    w = torch.ones(3, requires_grad=True)
    total = w.sum() * 0
    first = census(sys._getframe(), step=0)
    total = total + (w * 2).sum()
    count = 2
    mean = total / count
    obs = {o.path: o for o in census(sys._getframe(), step=1)}
    t = obs["total"]
    assert (t.root_op, t.operand_ops, t.scalar) == ("AddBackward0", ("MulBackward0", "SumBackward0"), True)
    assert t.oldest == 0  # the root stamped by the first census lies in the graph now
    assert obs["mean"].inner == ("total",) and obs["total"].inner == ()
    del first, mean


def test_a_bounded_deque_the_trackers_site_and_a_long_list_read_by_its_ends() -> None:
    recent = collections.deque([torch.ones(2)], maxlen=4)
    long = [torch.ones(2) for _ in range(5000)]
    obs = {o.path: o for o in census(sys._getframe(), site_of=lambda t: ("made.py", t.numel()))}
    assert obs["recent"].bounded and obs["recent"].container == "deque"
    assert obs["recent"].site == ("made.py", 2)
    assert obs["long"].tensors == 5000 and obs["long"].bytes == 5000 * 8
    del recent, long


def test_the_walk_is_bounded_and_skips_memprofs_own_objects() -> None:
    class Node:
        def __init__(self, nxt: object) -> None:
            self.nxt = nxt

    chain: object = torch.ones(1)
    for _ in range(30000):  # deeper than the budget: its tensor is not reached
        chain = Node(chain)
    session_like = StorageTracker()
    t0 = time.perf_counter()
    obs = census(sys._getframe())
    took = time.perf_counter() - t0
    assert census_mod.last_census_objects <= holders.MAX_OBJECTS
    assert not any("session_like" in o.path for o in obs)
    assert took < 2.0
    del chain, session_like


def test_names_of_storages_reaches_deep_holders() -> None:
    net = _Net()
    key = net.callbacks[1].last.untyped_storage()._cdata
    names = names_of_storages(sys._getframe(), {key})
    path, where = names[key]
    assert path == "net.callbacks[1].last" and where.f_code.co_name == "test_names_of_storages_reaches_deep_holders"
    del net


def test_a_census_keeps_no_generator_local_alive() -> None:
    def gen() -> object:
        x = torch.randn(1000)
        yield 1
        x = torch.randn(10)  # noqa: F841
        yield 2

    g = gen()
    next(g)
    ref = weakref.ref(g.gi_frame.f_locals["x"].untyped_storage())
    census(sys._getframe())
    next(g)  # the generator rebinds its variable: the old tensor must die now
    assert ref() is None


def test_a_dict_of_bounded_deques_is_bounded_and_one_unbounded_item_is_not() -> None:
    histories = {"loss": collections.deque([torch.ones(2)], maxlen=4), "step": 3}
    mixed = {"loss": collections.deque([torch.ones(2)], maxlen=4), "all": [torch.ones(2)]}
    open_ended = [collections.deque([torch.ones(2)])]
    obs = {o.path: o for o in census(sys._getframe())}
    assert obs["histories"].bounded
    assert not obs["mixed"].bounded and not obs["open_ended"].bounded
    del histories, mixed, open_ended
