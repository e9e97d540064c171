"""The census of frames and graphs, and the forward tracker (collect/census.py, graphs.py)."""

from __future__ import annotations

import gc
import sys

import torch
from torch import nn

from memprof.collect.census import census, names_of_storages
from memprof.collect.graphs import ForwardTracker
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
