"""The replay of a model call with autograd on and off measures what ``no_grad`` saves: the same
difference of peaks as running the real calls both ways."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from memprof.collect.batch import call_inputs
from memprof.collect.no_grad_probe import NoGradSaving, no_grad_saving


class _Live(TorchDispatchMode):
    """Live bytes of the storages ops make (as ../shared/tools/groundtruth.py counts them)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.ids: dict[int, int] = {}

    def _track(self, t: torch.Tensor) -> None:
        s = t.untyped_storage()
        if id(s) in self.ids or not s.nbytes():
            return
        self.ids[id(s)] = s.nbytes()
        self.live += s.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(s, self._free, id(s))

    def _free(self, key: int) -> None:
        self.live -= self.ids.pop(key, 0)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._track, out)
        return out


def _real_peak(model: nn.Module, x: torch.Tensor, calls: int, grad: bool) -> int:
    """The peak over ``calls`` real calls, each output kept (``out = model(x)`` in a loop keeps the
    last graph while the next call runs; ``total += model(x)`` keeps all)."""
    kept = []
    with _Live() as live, torch.set_grad_enabled(grad):
        for _ in range(calls):
            kept.append(model(x))
        return live.peak


MODELS = {
    "relu": lambda: nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 2)),
    "gelu": lambda: nn.Sequential(nn.Linear(128, 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(), nn.Linear(512, 5)),
    "norm": lambda: nn.Sequential(nn.Linear(64, 256), nn.LayerNorm(256), nn.Tanh(), nn.Linear(256, 8)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_replay_measures_the_real_difference_of_peaks(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    first = model[0]
    assert isinstance(first, nn.Linear)
    x = torch.randn(96, first.in_features)
    with torch.enable_grad():
        call = call_inputs(model, (x,), {})
    saving = no_grad_saving(call)
    for calls in (1, 2, 4):
        real = _real_peak(model, x, calls, grad=True) - _real_peak(model, x, calls, grad=False)
        assert real > 0
        assert saving.at(calls) == pytest.approx(real, rel=0.05), (name, calls)


def test_parameters_and_inputs_are_not_counted() -> None:
    # A linear layer saves its input and its weight: both exist without autograd too.
    model = nn.Linear(512, 512)
    with torch.enable_grad():
        call = call_inputs(model, (torch.randn(64, 512),), {})
    assert no_grad_saving(call).at(1) == 0


def test_a_dead_model_is_not_replayed() -> None:
    model = nn.Linear(4, 4)
    with torch.enable_grad():
        call = call_inputs(model, (torch.randn(2, 4),), {})
    del model
    with pytest.raises(RuntimeError, match="gone"):
        no_grad_saving(call)


def test_more_graphs_alive_add_what_one_more_call_adds() -> None:
    s = NoGradSaving(first=3, more=2)
    assert [s.at(n) for n in (0, 1, 2, 5)] == [3, 3, 5, 11]
