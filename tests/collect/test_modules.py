"""The module collector: names, parameter/activation/gradient bytes, root calls."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from memprof.collect.modules import ModuleCollector, RootCall, batch_size_of
from memprof.collect.storage import StorageTracker
from memprof.model.categories import ACTIVATIONS, PARAMETERS


def test_modules_are_named_and_measured() -> None:
    tracker = StorageTracker()
    calls: list[Any] = []
    outputs: list[Any] = []

    def on_call(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RootCall:
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
    collector = ModuleCollector(tracker, lambda m, a, k: seen.append(m), lambda c, o: None)  # type: ignore[arg-type,func-returns-value]
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
    assert batch_size_of((), {"x": [torch.zeros(2)]}) == 2
    assert batch_size_of((torch.tensor(1.0),)) is None


def test_a_model_call_is_described_again_when_what_it_depends_on_changes() -> None:
    """The description of a call (for the advisor's replay) is reused while a loop calls the model
    with tensors of the same shapes, and made anew for a new shape, dtype, mode or argument kind."""
    tracker = StorageTracker()
    collector = ModuleCollector(tracker, lambda m, a, k: collector.make_call(m, a, k), lambda c, o: None)
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
