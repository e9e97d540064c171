"""The backward-pass hook: transparent to the caller, told only of outermost passes, removed cleanly."""

from __future__ import annotations

import inspect
import threading
from typing import Any

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from memprof.collect.autograd import BackwardHook, graph_leaves

ORIGINAL_BACKWARD = torch.autograd.backward
ORIGINAL_GRAD = torch.autograd.grad


class _Log:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def start(self) -> None:
        self.events.append(("start", None))

    def end(self, outputs: Any, inputs: Any) -> None:
        self.events.append(("end", inputs))


@pytest.fixture
def hooked() -> Any:
    log = _Log()
    hook = BackwardHook(log.start, log.end)
    hook.install()
    try:
        yield hook, log
    finally:
        hook.remove()
    assert torch.autograd.backward is ORIGINAL_BACKWARD and torch.autograd.grad is ORIGINAL_GRAD


def test_tensor_backward_and_grad_are_seen_and_give_the_same_results(hooked: Any) -> None:
    hook, log = hooked
    w = torch.randn(3, requires_grad=True)
    (w * 2).sum().backward()
    assert torch.equal(w.grad, torch.full((3,), 2.0))
    (g,) = torch.autograd.grad((w * w).sum(), w)
    assert torch.allclose(g, 2 * w)
    (g2,) = torch.autograd.grad(outputs=[(w * 3).sum()], inputs=[w])
    assert torch.equal(g2, torch.full((3,), 3.0))
    assert [e for e, _ in log.events] == ["start", "end"] * 3
    assert log.events[3][1] is w  # grad's inputs
    assert inspect.signature(torch.autograd.backward) == inspect.signature(ORIGINAL_BACKWARD)


def test_the_user_s_errors_pass_unchanged_and_memprof_s_never(hooked: Any) -> None:
    hook, log = hooked
    w = torch.randn(3, requires_grad=True)
    loss = (w * w).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()  # the graph was freed: torch's own error, unchanged
    assert hook.depth == 0

    def broken(*args: Any) -> None:
        raise ValueError("memprof bug")

    hook.on_start = broken
    hook.on_end = broken
    (w * 2).sum().backward()  # runs anyway
    assert hook.errors == 2 and isinstance(hook.last_error, ValueError)


def test_nested_passes_are_the_outer_one_s(hooked: Any) -> None:
    """A reentrant checkpoint runs a backward inside the backward."""
    hook, log = hooked
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    out = checkpoint(lin, x, use_reentrant=True)
    out.sum().backward()
    assert [e for e, _ in log.events] == ["start", "end"]
    assert lin.weight.grad is not None


def test_passes_of_other_threads_are_not_told(hooked: Any) -> None:
    hook, log = hooked
    w = torch.randn(3, requires_grad=True)
    t = threading.Thread(target=lambda: (w * 2).sum().backward())
    t.start()
    t.join()
    assert log.events == [] and w.grad is not None


def test_removed_under_another_wrapper_it_passes_through() -> None:
    log = _Log()
    hook = BackwardHook(log.start, log.end)
    hook.install()
    mine = torch.autograd.backward

    def theirs(*args: Any, **kwargs: Any) -> Any:
        return mine(*args, **kwargs)

    torch.autograd.backward = theirs
    try:
        hook.remove()
        assert torch.autograd.backward is theirs  # theirs stays, ours under it passes calls through
        w = torch.randn(3, requires_grad=True)
        (w * 2).sum().backward()
        assert log.events == [] and w.grad is not None
    finally:
        torch.autograd.backward = ORIGINAL_BACKWARD
        torch.autograd.grad = ORIGINAL_GRAD


def test_graph_leaves_finds_the_tensors_a_backward_accumulates_into() -> None:
    a, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    loss = (a * 2 + b.exp()).sum()
    assert {id(t) for t in graph_leaves(loss)} == {id(a), id(b)}
    assert graph_leaves(torch.randn(3)) == []
