"""The one leaf walker, with each caller's limits: a call's description (3 levels, 64 items, plain
containers only), its batch size, a model output's graph tensor and the replay's loss."""

from __future__ import annotations

import collections
import dataclasses

import torch

from memprof.collect.graphs import ForwardTracker
from memprof.collect.leaves import attributes, containers, first_tensor, leaves, map_leaves, records, tensors
from memprof.collect.modules import _describe, batch_size_of
from memprof.collect.replay_step import stand_in_loss
from memprof.model.run import ForwardRecord, TensorSpec

Pair = collections.namedtuple("Pair", "a b")


@dataclasses.dataclass
class Output:
    loss: object = None
    logits: object = None


class Holder:
    def __init__(self, t: object) -> None:
        self.t = t


def test_depth_counts_the_levels_opened_and_a_tensor_is_always_a_leaf() -> None:
    t = torch.zeros(2)
    assert leaves([1, (2, {"k": 3})]) == [1, 2, 3]
    assert first_tensor([[[t]]], depth=3) is t  # the outer container and two inside it
    assert first_tensor([[[[t]]]], depth=3) is None
    assert tensors(([t], {"a": t}, [[[t]]]), depth=3) == [t, t]
    assert leaves(t) == [t] and leaves(t, depth=0) == [t]
    assert leaves([t], depth=0) == [[t]]


def test_opening_rules() -> None:
    t = torch.zeros(2)
    assert containers("text") is None and containers(Pair(1, 2)) == Pair(1, 2)
    assert list(records(Output(t, 1)) or []) == [t, 1]
    assert records(Holder(t)) is None
    assert list(attributes(Holder(t)) or []) == [t] and attributes(3) is None
    assert first_tensor(Output(None, t), items=records, depth=3) is t
    assert first_tensor(Holder(t), depth=3) is None and first_tensor(Holder(t), items=attributes, depth=3) is t


def test_map_keeps_the_structure_and_exact_opens_plain_containers_only() -> None:
    assert map_leaves((1, [2, {"k": 3}]), lambda x: x * 10) == (10, [20, {"k": 30}])
    assert map_leaves(Pair(1, 2), str, exact=True) == "Pair(a=1, b=2)"
    assert map_leaves([1] * 65, str, max_items=64) == str([1] * 65)
    assert map_leaves([[[[1]]]], str, depth=3) == [[["[1]"]]]


def test_a_call_is_described_to_three_levels_and_64_items() -> None:
    t = torch.zeros(4, 3)
    spec = TensorSpec((4, 3), torch.float32, "cpu", False)
    described, ok = _describe((t, [t, {"m": t}], {"flag": True, "dtype": torch.float16}))
    assert ok and described == (spec, [spec, {"m": spec}], {"flag": True, "dtype": torch.float16})
    assert _describe((((t,),),)) == ((((spec,),),), True)
    assert _describe(((((t,),),),)) == ((((None,),),), False)  # nested too deep
    assert _describe(([t] * 64,))[1] and not _describe(([t] * 65,))[1]
    assert _describe((Pair(t, t),)) == ((None,), False)  # a namedtuple: not rebuilt
    assert _describe((Holder(t),)) == ((None,), False)
    assert batch_size_of((([[t]]),)) == 4 and batch_size_of(([[[t]]],)) is None


def test_the_graph_behind_a_records_field_and_the_loss_inside_an_object() -> None:
    x = torch.randn(3, 5, requires_grad=True)
    logits = x * 2
    tracker = ForwardTracker(on_dead=lambda r: None, on_backward=lambda r: None)
    assert tracker.watch(Output(loss=None, logits=logits), ForwardRecord("model", None, 0, "train"))
    assert not tracker.watch(Output(loss=torch.zeros(1), logits=None), ForwardRecord("model", None, 0, "train"))
    loss = stand_in_loss(Holder(logits))
    assert loss is not None and loss.dim() == 0 and loss.grad_fn is not None
