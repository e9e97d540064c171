"""Forward passes and their fate: backpropagated, retained, or dropped without a backward.

Each root-module call whose output carries autograd history gets a pre-hook on the output's
``grad_fn``: it fires when a backward reaches it (and notes the user line of that backward call),
and a weak reference to the hook function, which only the node holds, fires when the graph is
destroyed. A graph destroyed without any backward was recorded for nothing: the mark of a forward
pass that needed ``torch.no_grad()``.

Known limitations:
- With ``sample_sites`` off (``--detail full`` between its sampled steps), a backward's user line
  is the one last looked up for the same model, not looked up again.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch

from memprof.collect.leaves import first_tensor, records
from memprof.collect.sites import main_thread_frame, user_frame
from memprof.model.run import ForwardRecord


def _has_graph(t: torch.Tensor) -> bool:
    return t.grad_fn is not None


class _SentinelRef(weakref.ref):  # type: ignore[type-arg]
    __slots__ = ("key", "record")

    key: int
    record: ForwardRecord


class ForwardTracker:
    def __init__(self, on_dead: Callable[[ForwardRecord], None], on_backward: Callable[[ForwardRecord], None]) -> None:
        self.on_dead = on_dead
        self.on_backward = on_backward
        self.by_node: dict[int, ForwardRecord] = {}  # id(grad_fn) -> record, while the graph lives
        self.step = 0
        self.enabled = True
        self._sentinels: dict[int, _SentinelRef] = {}  # the weak references that wait for graphs to die
        # Where each model's last backward was called from, looked up when sample_sites is set
        # (the session sets it on its sampled steps) and the first time; reused otherwise.
        self.backward_sites: dict[str, tuple[str, int]] = {}
        self.sample_sites = True

    def watch(self, output: Any, record: ForwardRecord) -> bool:
        """Mark the graph behind ``output``; False when it has no graph."""
        t = first_tensor(output, _has_graph, depth=3, items=records)
        if t is None or not self.enabled:
            return False
        node: Any = t.grad_fn
        key = id(node)
        record.node_key = key
        self.by_node[key] = record
        prehook = self._make_prehook(record)
        node.register_prehook(prehook)
        # The node alone holds its pre-hook: the function dies with the graph, and a weak reference
        # to it says when (a plain one: weakref.finalize's registry costs more).
        ref = _SentinelRef(prehook, self._on_sentinel)
        ref.key, ref.record = key, record
        self._sentinels[id(ref)] = ref
        return True

    def _on_sentinel(self, ref: _SentinelRef) -> None:
        if self._sentinels.pop(id(ref), None) is ref:
            self._dead(ref.key, ref.record)

    def _make_prehook(self, record: ForwardRecord) -> Callable[[Any], None]:
        def prehook(grad_outputs: Any) -> None:
            if not record.backpropagated:
                record.backpropagated = True
                try:
                    site = None if self.sample_sites else self.backward_sites.get(record.module)
                    if site is None:
                        frame = user_frame(main_thread_frame())
                        if frame is not None:
                            site = self.backward_sites[record.module] = (frame.f_code.co_filename, frame.f_lineno)
                    record.backward_site = site
                    self.on_backward(record)
                except Exception:
                    pass
            return None

        return prehook

    def _dead(self, key: int, record: ForwardRecord) -> None:
        if self.by_node.get(key) is record:
            del self.by_node[key]
        record.dead = True
        record.dead_step = self.step
        try:
            self.on_dead(record)
        except Exception:
            pass

    def pending(self) -> list[ForwardRecord]:
        return list(self.by_node.values())
