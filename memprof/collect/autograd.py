"""Backward passes: where autograd's engine starts and ends one, seen from its two Python entry points.

``torch.autograd.backward`` (which ``Tensor.backward`` calls, looked up at each call) and
``torch.autograd.grad`` are replaced, for a session's life, by wrappers that tell the session a
backward pass starts and ended, then return what the original returns and raise what it raises.
Nested passes (a reentrant checkpoint's backward inside the outer one, a ``grad`` inside a custom
``Function``'s backward) are the outer pass's: only the outermost is told. Passes run by other
threads than the one that installed the hook are passed through untold.

The wrappers hold the hook, never the session: removed, a wrapper that another library wrapped in
turn stays in place, passing every call through.

Known limitations:
- A name bound before the session (``from torch.autograd import grad``) calls the original: those
  passes are not seen.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.autograd

from memprof.collect.storage import _skip_dynamo

# on_start(), on_end(outputs, inputs): outputs are what is differentiated (a tensor or a sequence),
# inputs the leaves asked for (``grad``'s inputs, ``backward``'s ``inputs=``) or None.
OnStart = Callable[[], None]
OnEnd = Callable[[Any, Any], None]


class BackwardHook:
    """Tells ``on_start`` and ``on_end`` where each outermost backward pass starts and ends."""

    def __init__(self, on_start: OnStart, on_end: OnEnd) -> None:
        self.on_start: OnStart | None = on_start
        self.on_end: OnEnd | None = on_end
        self.depth = 0  # backward passes running (nested ones included), any thread
        self.errors = 0  # the callbacks' own exceptions (swallowed: never the user's)
        self.last_error: BaseException | None = None
        self._thread = 0
        self._saved: dict[str, Callable[..., Any]] = {}  # name -> the original, while installed
        self._mine: dict[str, Callable[..., Any]] = {}  # name -> our wrapper

    @property
    def installed(self) -> bool:
        return bool(self._saved)

    def install(self) -> None:
        if self._saved:
            return
        self._thread = threading.get_ident()
        for name in ("backward", "grad"):
            original = getattr(torch.autograd, name)
            wrapper = self._wrap(original, grad=name == "grad")
            self._saved[name], self._mine[name] = original, wrapper
            setattr(torch.autograd, name, wrapper)

    def remove(self) -> None:
        """Put the originals back where our wrappers are still in place; else (another library
        wrapped ours) ours stay, passing calls through (``on_start`` is None)."""
        self.on_start = self.on_end = None
        for name, original in self._saved.items():
            if getattr(torch.autograd, name, None) is self._mine[name]:
                setattr(torch.autograd, name, original)
        self._saved = {}
        self._mine = {}

    def _wrap(self, original: Callable[..., Any], grad: bool) -> Callable[..., Any]:
        hook = self

        get_ident = threading.get_ident

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = hook.on_start
            if hook.depth or start is None or get_ident() != hook._thread:
                hook.depth += 1
                try:
                    return original(*args, **kwargs)
                finally:
                    hook.depth -= 1
            try:  # inline, not through _call: this runs at every backward pass
                start()
            except torch.OutOfMemoryError:
                raise
            except Exception as e:
                hook._failed(e)
            hook.depth += 1
            try:
                out = original(*args, **kwargs)
            finally:
                hook.depth -= 1
            end = hook.on_end
            if end is not None:
                try:
                    if grad:
                        outputs = args[0] if args else kwargs.get("outputs")
                        inputs = args[1] if len(args) > 1 else kwargs.get("inputs")
                    else:
                        outputs = args[0] if args else kwargs.get("tensors")
                        inputs = kwargs.get("inputs")
                    end(outputs, inputs)
                except torch.OutOfMemoryError:
                    raise
                except Exception as e:
                    hook._failed(e)
            return out

        wrapper._memprof_backward_hook = True  # type: ignore[attr-defined]
        _skip_dynamo(wrapper.__code__)  # type: ignore[attr-defined]  # dynamo never traces memprof's wrapper
        return wrapper

    def _failed(self, e: BaseException) -> None:
        self.errors += 1
        self.last_error = e


def graph_leaves(outputs: Any, want: int = 2, budget: int = 256) -> list[torch.Tensor]:
    """Up to ``want`` leaves a backward from ``outputs`` accumulates gradients into (the tensors
    of its ``AccumulateGrad`` nodes), within ``budget`` nodes of the graph."""
    roots = outputs if isinstance(outputs, (list, tuple)) else (outputs,)
    stack: list[Any] = [t.grad_fn for t in roots if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    seen: set[int] = set()
    found: list[torch.Tensor] = []
    while stack and len(seen) < budget:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):
            found.append(variable)
            if len(found) >= want:
                break
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found
