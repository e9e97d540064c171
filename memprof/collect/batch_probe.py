"""The probe of a model's first call: what its batch-layout modules read, and what its loss's
input and target share (:mod:`memprof.collect.batch` weighs it).

A global forward pre-hook sees the modules called (the root's layout modules and cells, and loss
modules) and a ``TorchFunctionMode`` sees the ``torch.nn.functional`` losses, from the root's call
to the next model call: one probe at a time, once per root and rank of its first input, until one
learns something (:data:`MAX_PROBES` tries). Neither sits on the user's objects.

Known limitations:
- The function mode is left out for compiled models (dynamo would trace it) and for calls without
  autograd (a function mode turns off the transformer layers' inference fast path).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.overrides import TorchFunctionMode

from memprof.collect.batch import BatchedCall, RootBatch, locate, reads, shape_of, shared_size

_LOSS_MODULES = (nn.modules.loss._Loss,)
# torch.nn.functional losses whose first two arguments are the input and the target
_LOSS_FUNCTIONS = frozenset(f for f in (
    getattr(F, name, None) for name in (
        "cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits", "mse_loss",
        "l1_loss", "smooth_l1_loss", "huber_loss", "kl_div", "poisson_nll_loss", "gaussian_nll_loss",
        "multi_margin_loss", "multilabel_margin_loss", "multilabel_soft_margin_loss", "soft_margin_loss",
        "hinge_embedding_loss", "ctc_loss")) if f is not None)
MAX_PROBES = 3  # probes of one root and rank that learnt nothing, before giving up
Notify = Callable[[int, int, str], None]  # (new batch dimension, its size, why)
_probe: list[_Probe | None] = [None]  # the probe running, if any


class _LossMode(TorchFunctionMode):
    """Sees the ``torch.nn.functional`` losses called until the probe ends; passes all through."""

    def __init__(self, probe: _Probe) -> None:
        super().__init__()
        self.probe: _Probe | None = probe

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        probe = self.probe
        if probe is not None and func in _LOSS_FUNCTIONS:
            kw = kwargs or {}
            inp = args[0] if len(args) > 0 else kw.get("input")
            target = args[1] if len(args) > 1 else kw.get("target")
            probe.on_loss(getattr(func, "__name__", "loss"), inp, target)
        return func(*args, **(kwargs or {}))


def _remove_mode(mode: TorchFunctionMode) -> None:
    """Take ``mode`` off the function-mode stack wherever it is, the modes above it kept in order."""
    from torch.overrides import _len_torch_function_stack, _pop_mode, _push_mode

    above: list[Any] = []
    for _ in range(_len_torch_function_stack()):
        m = _pop_mode()
        if m is mode:
            break
        above.append(m)
    for m in reversed(above):  # (all of them when it was not there: someone popped it already)
        _push_mode(m)


class _Probe:
    """One call of a root, watched for what its layout modules read and what its loss shares."""

    def __init__(self, loc: RootBatch, shape: tuple[int, ...], notify: Notify, losses: bool) -> None:
        from torch.nn.modules import module as mm

        self.loc = loc
        self.shape = shape
        self.notify = notify
        self.learnt = False
        self.loss_seen = False
        self.handles = [mm.register_module_forward_pre_hook(self._pre),
                        register_optimizer_step_post_hook(self._stepped)]
        self.mode: _LossMode | None = None
        if losses:
            from torch.overrides import _push_mode

            self.mode = _LossMode(self)
            _push_mode(self.mode)

    def _pre(self, module: nn.Module, args: Any) -> None:
        try:
            if id(module) in self.loc.layout_ids:
                found = reads(module, args if isinstance(args, tuple) else (args,))
                if found is not None:
                    if all(found[0] != s for s, _ in self.loc.seen):
                        self.loc.seen.append(found)
                    self._learnt()
            elif isinstance(module, _LOSS_MODULES) and isinstance(args, tuple) and len(args) >= 2:
                self.on_loss(type(module).__name__, args[0], args[1])
        except Exception:  # never break the user's forward
            pass

    @staticmethod
    def _stepped(opt: Any, args: Any, kwargs: Any) -> None:
        end_probe()  # an optimizer step: the loss was computed (outside any function-mode handler)

    def on_loss(self, name: str, inp: Any, target: Any) -> None:
        if self.loss_seen:
            return
        self.loss_seen = True
        try:
            n = shared_size(inp, target)
            if n is not None and n in self.shape:
                if all(n != s for s, _ in self.loc.loss):
                    self.loc.loss.append((n, f"{name}: input {shape_of(inp)} and target {shape_of(target)} share {n}"))
                self._learnt()
        except Exception:
            pass

    def _learnt(self) -> None:
        self.learnt = True
        n = len(self.shape)
        self.loc.settled.add(n)
        before = self.loc.dims.get(n)
        d = self.loc.settle(self.shape)
        if d != before:
            self.notify(d, self.shape[d], self.loc.sources[n])

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        if self.mode is not None:
            self.mode.probe = None
            try:
                _remove_mode(self.mode)
            except Exception:
                pass
            self.mode = None
        if not self.learnt:
            n = len(self.shape)
            self.loc.probes[n] = self.loc.probes.get(n, 0) + 1


def end_probe() -> None:
    """End the probe running: at the next model call, the next optimizer step, the session's end."""
    probe = _probe[0]
    if probe is not None:
        _probe[0] = None
        probe.close()


def _compiled(module: nn.Module) -> bool:
    return type(module).__name__ == "OptimizedModule" or hasattr(module.forward, "_torchdynamo_orig_callable")


def watch(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None, call: Any,
          described: Any, tracker: Any) -> None:
    """A root call (``call`` the session's record of it, ``described`` its
    :class:`~memprof.collect.batch.BatchedCall`): end the last call's probe, and probe this one
    unless its rank was settled. When the probe moves the batch, ``call``'s and ``described``'s batch
    follow, and the tracker's when it was this call's guess. Never raises."""
    try:
        end_probe()
        first, loc = locate(module, args, kwargs)
        if first is None or first.dim() < 2:
            return
        n = first.dim()
        if n in loc.settled or loc.probes.get(n, 0) >= MAX_PROBES:
            return
        shape = shape_of(first)
        if shape is None:
            return
        guess = call.batch_size
        # weak: a probe left running (a call without a step after it) keeps nothing alive
        call_ref = weakref.ref(call)
        described_ref = weakref.ref(described) if isinstance(described, BatchedCall) else None
        tracker_ref = weakref.ref(tracker)

        def notify(dim: int, size: int, why: str) -> None:
            c, d, t = call_ref(), described_ref() if described_ref is not None else None, tracker_ref()
            if c is not None:
                c.batch_size = size
            if d is not None:
                d.batch_size, d.batch_dim, d.batch_source = size, dim, why
            if t is not None and guess is not None and t.batch_size == guess != size:
                t.batch_size = size  # the tracker's batch came from this call's guess

        _probe[0] = _Probe(loc, shape, notify, losses=torch.is_grad_enabled() and not _compiled(module))
    except Exception:
        pass
