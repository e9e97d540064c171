"""The module collector: names, parameter/activation/gradient bytes, root calls."""

from __future__ import annotations

import copy
import gc
from typing import Any

import pytest
import torch
from torch import nn

from memprof.collect.modules import ModuleCollector, RootCall, batch_size_of
from memprof.collect.storage import StorageTracker
from memprof.model.categories import ACTIVATIONS, PARAMETERS


def test_modules_are_named_and_measured() -> None:
    tracker = StorageTracker()
    calls: list[Any] = []
    outputs: list[Any] = []

    def on_call(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], caller: Any) -> RootCall:
        call = collector.make_call(module, args, kwargs)
        calls.append(call)
        return call

    collector = ModuleCollector(tracker, on_call, lambda call, out: outputs.append(out))
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    with tracker:
        collector.enable_detail()
        try:
            out = net(torch.randn(5, 8))
            out.sum().backward()
        finally:
            collector.disable_detail()
    collector.end_step()
    collector.record_gradients()
    stats = {s.name: s for s in collector.records()}
    assert set(stats) == {"net", "net.0", "net.1", "net.2"}  # the root is named after its variable
    assert stats["net"].parameter_bytes == (8 * 32 + 32 + 32 * 2 + 2) * 4
    assert stats["net.0"].gradient_bytes == (8 * 32 + 32) * 4
    assert stats["net.1"].activation_bytes == 5 * 32 * 4  # ReLU saves its output
    assert stats["net"].activation_bytes >= stats["net.1"].activation_bytes
    assert calls and calls[0].batch_size == 5 and calls[0].grad_enabled and calls[0].site is not None
    assert calls[0].site[0] == __file__ and outputs
    assert tracker.cat[PARAMETERS] == stats["net"].parameter_bytes
    assert tracker.peak_cat[ACTIVATIONS] > 0
    collector.close()


def test_modules_without_parameters_are_not_iterations() -> None:
    tracker = StorageTracker()
    seen: list[nn.Module] = []
    collector = ModuleCollector(tracker, lambda m, a, k, f: seen.append(m), lambda c, o: None)  # type: ignore[arg-type,func-returns-value]
    loss_fn = nn.MSELoss()
    with tracker:
        collector.enable_detail()
        loss_fn(torch.randn(3), torch.randn(3))
        collector.disable_detail()
    assert not seen and "loss_fn" in {s.name for s in collector.records()}
    collector.close()


def test_batch_size_of_nested_inputs() -> None:
    assert batch_size_of((torch.zeros(7, 3),)) == 7
    assert batch_size_of(({"ids": torch.zeros(4, 9)},)) == 4
    assert batch_size_of((), {"x": [torch.zeros(2, 5)]}) == 2
    assert batch_size_of((torch.tensor(1.0),)) is None
    # One sample's features (an RL policy's state) has no batch; 1-D token ids are a batch.
    assert batch_size_of((torch.zeros(4),)) is None
    assert batch_size_of((torch.zeros(6, dtype=torch.long),)) == 6


def test_a_model_call_is_described_again_when_what_it_depends_on_changes() -> None:
    """The description of a call (for the advisor's replay) is reused while a loop calls the model
    with tensors of the same shapes, and made anew for a new shape, dtype, mode or argument kind."""
    tracker = StorageTracker()
    collector = ModuleCollector(tracker, lambda m, a, k, f: collector.make_call(m, a, k), lambda c, o: None)
    net = nn.Linear(4, 2)
    collector._adopt_root(net, None)

    def last() -> Any:
        return collector.last_inputs[(id(net), torch.is_grad_enabled())]

    net(torch.randn(8, 4))
    first = last()
    net(torch.randn(8, 4))
    assert last() is first  # the same shapes: the same description
    net(torch.randn(3, 4))
    assert last() is not first and last().batch_size == 3 and last().args[0].shape == (3, 4)
    net(torch.randn(3, 4, dtype=torch.float64).float())
    assert last().batch_size == 3
    shaped = last()
    net.eval()
    net(torch.randn(3, 4))
    assert last() is not shaped and last().training is False
    net(input=torch.randn(5, 4))  # keyword arguments are described every time
    assert last().batch_size == 5 and last().kwargs["input"].shape == (5, 4)
    collector.close()


_PLAIN_CALL = nn.Module.__call__
_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called", "_backward_hooks", "_backward_pre_hooks")


@pytest.fixture(autouse=True)
def _plain_module_call() -> Any:
    """A test that fails before its collector closes leaves no layer for the next."""
    yield
    nn.Module.__call__ = _PLAIN_CALL  # type: ignore[method-assign]


def _following() -> tuple[ModuleCollector, list[Any], list[Any]]:
    """A collector that follows root calls as the session does, recording them and their outputs."""
    calls: list[Any] = []
    outputs: list[Any] = []

    def on_call(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], caller: Any) -> RootCall:
        calls.append(module)
        return collector.make_call(module, args, kwargs)

    collector = ModuleCollector(StorageTracker(), on_call, lambda call, out: outputs.append(out))
    return collector, calls, outputs


def test_root_calls_are_followed_with_nothing_on_the_model_and_the_layer_goes_at_close() -> None:
    collector, calls, outputs = _following()
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    collector._adopt_root(net, None)
    assert nn.Module.__call__ is not _PLAIN_CALL  # the layer, on torch's class: not on the model
    for m in net.modules():
        assert all(not getattr(m, name) for name in _HOOK_DICTS)
    net(torch.randn(3, 4))
    net(input=torch.randn(5, 4))  # keywords reach the session
    assert calls == [net, net] and len(outputs) == 2 and outputs[1].shape == (5, 2)
    assert collector.last_inputs[(id(net), True)].kwargs["input"].shape == (5, 4)
    clone = copy.deepcopy(net)  # a copy is another model: not followed until adopted
    clone(torch.randn(2, 4))
    assert calls == [net, net]
    collector.close()
    assert nn.Module.__call__ is _PLAIN_CALL
    net(torch.randn(3, 4))
    assert len(calls) == 2


def test_a_forward_that_raises_leaves_the_collector_ready_for_the_next_call() -> None:
    collector, calls, outputs = _following()
    net = nn.Linear(4, 2)
    collector._adopt_root(net, None)
    with pytest.raises(RuntimeError):
        net(torch.randn(3, 5))  # the wrong width: the user's error, raised unchanged
    assert calls == [net] and outputs == [None]
    net(torch.randn(3, 4))
    assert calls == [net, net] and outputs[1].shape == (3, 2)
    collector.close()


def test_calls_inside_a_root_on_fake_tensors_or_traced_are_not_root_calls() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    collector, calls, _ = _following()
    inner = nn.Linear(4, 4)
    outer = nn.Sequential(inner, nn.ReLU())
    collector._adopt_root(outer, None)
    collector._adopt_root(inner, None)  # a root of its own, also called inside another root
    outer(torch.randn(2, 4))
    assert calls == [outer]
    with FakeTensorMode(allow_non_fake_inputs=True):  # the advisor's replays run the model so
        outer(torch.randn(2, 4))
    torch.jit.trace(outer, (torch.randn(2, 4),), check_trace=False)  # (its check calls the model eagerly)
    assert calls == [outer]
    inner(torch.randn(2, 4))
    assert calls == [outer, inner]
    from torch.utils.checkpoint import checkpoint

    out = checkpoint(outer, torch.randn(2, 4, requires_grad=True), use_reentrant=False)
    out.sum().backward()  # recomputes outer's forward inside the backward: not a call of the run
    assert calls == [outer, inner, outer]
    collector.close()


def test_a_dead_module_is_forgotten_and_keeps_its_record() -> None:
    collector, _, _ = _following()
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    collector._adopt_root(net, None)
    keys = [id(m) for m in net.modules()]
    del net
    gc.collect()
    assert not any(k in collector.stats or k in collector.names for k in keys)  # a new module there is new
    assert len(collector.records()) == 3 and not collector.roots
    again = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    collector._adopt_root(again, None)
    assert collector._known(again) and collector.roots[id(again)] is again
    assert len(collector.records()) == 3  # made again under the same names: one record each
    with collector.tracker:
        collector.enable_detail()
        for _ in range(5):  # a loss module made at each step: one module of the report, 5 calls
            criterion = nn.MSELoss()
            criterion(torch.randn(3), torch.randn(3))
        collector.disable_detail()
    losses = [r for r in collector.records() if r.type == "MSELoss"]
    assert [(r.name, r.calls) for r in losses] == [("criterion", 5)]
    collector.close()


def test_a_module_called_at_the_top_is_adopted_in_detail_only() -> None:
    collector, calls, _ = _following()
    seen, unseen = nn.Linear(4, 2), nn.Linear(4, 2)
    with collector.tracker:
        collector.enable_detail()
        seen(torch.randn(3, 4))  # adopted at its first call, and that call followed (with its batch)
        collector.disable_detail()
        unseen(torch.randn(3, 4))  # watch mode: not adopted
        seen(torch.randn(6, 4))
    assert calls == [seen, seen] and id(unseen) not in collector.stats
    collector.close()


def test_layers_of_two_collectors_come_off_in_any_order_and_pass_calls_on_when_covered() -> None:
    first, first_calls, _ = _following()
    second, second_calls, _ = _following()
    net = nn.Linear(4, 2)
    first._adopt_root(net, None)
    second._adopt_root(net, None)
    net(torch.randn(1, 4))
    assert first_calls == second_calls == [net]
    first.close()  # not on top: it stays under the second's layer, passing calls on
    net(torch.randn(1, 4))
    assert first_calls == [net] and second_calls == [net, net]
    second.close()  # both go
    assert nn.Module.__call__ is _PLAIN_CALL

    third, third_calls, _ = _following()
    third._adopt_root(net, None)
    layer = nn.Module.__call__

    def foreign(self: nn.Module, *args: Any, **kwargs: Any) -> Any:  # another library's patch, above
        return layer(self, *args, **kwargs)

    nn.Module.__call__ = foreign  # type: ignore[method-assign]
    try:
        third.close()
        assert nn.Module.__call__ is foreign
        net(torch.randn(1, 4))
        assert third_calls == []
    finally:
        nn.Module.__call__ = _PLAIN_CALL  # type: ignore[method-assign]
