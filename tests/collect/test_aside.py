"""Fake-tensor work in a thread of its own: what it returns and raises, and what it reads from the
caller's thread (autograd's mode, the default device)."""

from __future__ import annotations

import threading

import pytest
import torch

from memprof.collect.aside import run_aside


def test_the_result_comes_back_from_another_thread() -> None:
    caller = threading.get_ident()
    assert run_aside(lambda: (threading.get_ident() != caller, 42)) == (True, 42)


def test_what_it_raises_is_raised_in_the_caller() -> None:
    def fail() -> None:
        raise ValueError("in the replay")

    with pytest.raises(ValueError, match="in the replay"):
        run_aside(fail)


def test_autograd_mode_and_default_device_are_carried_over() -> None:
    with torch.no_grad():
        assert run_aside(torch.is_grad_enabled) is False
    assert run_aside(torch.is_grad_enabled) is True
    torch.set_default_device("meta")
    try:
        assert run_aside(lambda: torch.empty(2).device.type) == "meta"
    finally:
        torch.set_default_device(None)
    assert run_aside(lambda: torch.empty(2).device.type) == "cpu"


def test_fake_tensor_work_runs_there() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    def fake_step() -> tuple[list[int], int]:
        with FakeTensorMode():
            w = torch.empty(8, 4, requires_grad=True)
            (torch.empty(3, 8) @ w).sum().backward()
            assert w.grad is not None
            return list(w.grad.shape), threading.get_ident()

    shape, ident = run_aside(fake_step)
    assert shape == [8, 4] and ident != threading.get_ident()


def test_where_no_thread_can_start_it_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """At interpreter shutdown (an at-exit report) Python 3.12+ starts no thread: the work is
    done in the caller's thread rather than lost."""

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert run_aside(lambda: threading.get_ident()) == threading.get_ident()
