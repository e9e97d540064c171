"""The layer memprof puts on ``nn.Module.__call__``: how a session sees each call of a model while
nothing of memprof sits on the model (see :mod:`memprof.collect.modules`).

One layer per open collector, on torch's class, never on a user's module: a model pickles,
deep-copies and compiles as under plain python. Over PyTorch's own ``Module.__call__`` the layer
does what it does itself (no extra Python frame per module call); inside a root's call its cost is
one attribute read of a :class:`Gate`. Dynamo traces the layer (``torch.compile``): the gate holds
bools, not modules, and the collector's side returns at once while compiling.

Known limitations:
- Where another library replaces ``nn.Module.__call__`` after memprof, memprof's layer stays under
  it after the session, passing every call through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn


class Gate:
    """What memprof's layer around ``nn.Module.__call__`` reads: ``busy`` is None while no root
    call runs (a call then goes to ``top``, the collector's), True while one runs or once closed
    (``top`` None). A bool, not the root: dynamo traces the layer (``torch.compile``) and guards on
    what it reads. The layer holds the gate, never the collector: closed, the collector is freed
    even where the layer must stay (another library replaced ``nn.Module.__call__`` above it)."""

    __slots__ = ("busy", "top", "inner", "layer")

    def __init__(self) -> None:
        self.busy: bool | None = True
        self.top: Callable[..., Any] | None = None
        self.inner: Callable[..., Any] | None = None  # the ``nn.Module.__call__`` the layer wraps
        self.layer: Callable[..., Any] | None = None


_WRAPPED = nn.Module._wrapped_call_impl
# What PyTorch's ``Module.__call__`` does, checked by name: the layer over it does the same itself
# (no extra Python frame per module call); over anything else, it calls what it wraps.
_PLAIN_CALL = _WRAPPED.__code__.co_names == ("_compiled_call_impl", "_call_impl")


def make_layer(gate: Gate, inner: Callable[..., Any]) -> Callable[..., Any]:
    """The ``nn.Module.__call__`` that passes calls on to ``inner`` while ``gate.busy``, and gives
    the others to ``gate.top(inner, module, args, kwargs)``."""
    if inner is _WRAPPED and _PLAIN_CALL:
        def __call__(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            if gate.busy is not None:  # the common path: a module called inside a root's call
                if self._compiled_call_impl is not None:
                    return self._compiled_call_impl(*args, **kwargs)
                return self._call_impl(*args, **kwargs)
            top = gate.top
            if top is None:
                return inner(self, *args, **kwargs)
            return top(inner, self, args, kwargs)
    else:
        def __call__(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            if gate.busy is not None:
                return inner(self, *args, **kwargs)
            top = gate.top
            if top is None:
                return inner(self, *args, **kwargs)
            return top(inner, self, args, kwargs)

    __call__._memprof_gate = gate  # type: ignore[attr-defined]
    return __call__


def install(gate: Gate, top: Callable[..., Any]) -> None:
    """Put a layer on ``nn.Module.__call__`` that sends calls outside any root to ``top``."""
    if gate.layer is None:
        inner = nn.Module.__call__
        layer = make_layer(gate, inner)
        gate.inner, gate.layer = inner, layer
        nn.Module.__call__ = layer  # type: ignore[method-assign]
    gate.top = top
    gate.busy = None


def uninstall(gate: Gate) -> None:
    """Take the layer off where it is on top (with any closed memprof layer under it); else it
    stays, passing every call through."""
    gate.busy, gate.top = True, None
    if gate.layer is None or nn.Module.__dict__.get("__call__") is not gate.layer:
        return
    inner = gate.inner
    while True:  # closed layers of other sessions under this one go too
        below = getattr(inner, "_memprof_gate", None)
        if not isinstance(below, Gate) or below.top is not None or below.inner is None:
            break
        below.layer, inner = None, below.inner
    nn.Module.__call__ = inner  # type: ignore[method-assign,assignment]
    gate.layer = gate.inner = None
