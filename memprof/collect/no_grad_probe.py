"""What ``torch.no_grad()`` around a model call would save, measured as one would by running both:
the call replayed on fake tensors (no memory) with autograd on and with it off, each time counting
live storage bytes with the replay's dispatch-mode counter, and the peaks subtracted.

Only what the call itself adds is counted: the parameters exist either way, and the inputs made
for the replay are the same in both runs. A loop such as ``for x in xs: out = model(x)`` keeps the
last call's graph alive while the next one runs (``out`` is rebound after the call returns), and
``total += model(x).sum()`` keeps every graph: the replay runs two calls, each output kept alive,
and the saving with ``n`` such graphs alive at once is the first call's saving plus ``n - 1`` times
what a second one adds (calls of the same shapes add the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from memprof.collect.replay import isolated, unwrap
from memprof.collect.replay_step import _Counter, _make_inputs, _training, batch_dim_of, fake_state, pick_batch
from memprof.model.run import CallInputs


@dataclass(frozen=True)
class NoGradSaving:
    """The peak's fall under ``no_grad``: ``first`` with one graph alive, ``more`` per further one."""

    first: int
    more: int

    def at(self, alive: int) -> int:
        return max(0, self.first + max(0, alive - 1) * self.more)


def _peak(counter: _Counter) -> int:
    return max([counter.live, *(live for live, _ in counter.peaks)])


def _peaks(call: CallInputs, module: nn.Module, grad: bool) -> tuple[int, int]:
    """The live-byte peak of one call, and of a second one while the first's output is kept."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.func import functional_call

    b = call.batch_size or pick_batch(module, call)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    state, fakes = fake_state(mode, [*module.named_parameters(), *module.named_buffers()])
    counter = _Counter(b)
    for f in fakes.values():
        counter.known(f)
    kept: list[Any] = []
    peaks: list[int] = []
    device_type = next((p.device.type for p in module.parameters()), "cpu")
    devices = [next(p.device.index or 0 for p in module.parameters())] if device_type == "cuda" else []
    # memprof's own saved-tensor hook must not see fake tensors: one that keeps them as they are goes on top
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: t.detach(), lambda t: t)
    with torch.random.fork_rng(devices=devices), _training(module, call.training), mode, counter, hooks:
        for _ in range(2):
            args = _make_inputs(call.args, call.batch_size, b, batch_dim_of(call))
            kwargs = _make_inputs(call.kwargs, call.batch_size, b, batch_dim_of(call))
            with torch.set_grad_enabled(grad), torch.autocast(device_type, enabled=call.autocast):
                kept.append(functional_call(module, state, tuple(args), kwargs))
            kept.append((args, kwargs))
            peaks.append(_peak(counter))
        kept.clear()
    return peaks[0], peaks[1]


def no_grad_saving(call: CallInputs) -> NoGradSaving:
    """Measure what ``no_grad`` saves on ``call`` (a model call recorded with autograd). Raises on
    failure (the model gone, inputs that could not be described, a forward fake tensors can't run)."""
    module = call.module() if callable(call.module) else None
    if not isinstance(module, nn.Module):
        raise RuntimeError("the model is gone")
    if not call.complete:
        raise RuntimeError("the model's inputs could not be described")
    module = unwrap(module)
    with isolated(module):
        on1, on2 = _peaks(call, module, grad=True)
        off1, off2 = _peaks(call, module, grad=False)
    first = max(0, on1 - off1)
    return NoGradSaving(first=first, more=max(0, (on2 - off2) - first))
