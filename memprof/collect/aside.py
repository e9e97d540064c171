"""Work on fake tensors run in a thread of its own, so that what torch keeps per thread for it
leaves with that thread.

Fake-tensor replays (:mod:`memprof.collect.replay_step`, :mod:`memprof.collect.no_grad_probe`)
leave functorch's thread-local state (its layer stack) on the thread that ran them. From then on
torch deep-copies that state each time it captures the thread's state, as the autograd engine does
at every backward pass: measured, 15k instructions a step of a small manual-SGD loop (1.3% of the
step's instructions; benchmarks/results/instructions-2026-12-04.md), for the rest of the user's run. A replay runs once; in a thread of its own, the user's
thread stays as plain python has it.

What the replays read from the caller's thread is carried over: autograd's mode, the default
device (``torch.set_default_device`` is per thread) and the current CUDA device. The rest of
torch's per-thread state starts empty there, which suits a replay: memprof's own saved-tensor hook
and op hook are the user's thread's, and never see the fake tensors.

Known limitations:
- At interpreter shutdown (a report written at exit), where Python 3.12+ starts no thread, the work
  runs on the caller's thread as before, and leaves its state there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def run_aside(fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread, waited for: its result, or what it raised, raised here."""
    grad = torch.is_grad_enabled()
    device = torch.get_default_device()
    cuda_index = torch.cuda.current_device() if torch.cuda.is_initialized() else None
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            torch.set_grad_enabled(grad)
            if device.type != "cpu":
                torch.set_default_device(device)
            if cuda_index is not None:
                torch.cuda.set_device(cuda_index)
            result.append(fn())
        except BaseException as e:  # raised again in the caller's thread
            error.append(e)

    # A daemon: a Ctrl-C while the caller waits must not leave the process waiting for a replay.
    thread = threading.Thread(target=target, name="memprof-replay", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # at interpreter shutdown (an at-exit report; Python >= 3.12 starts no thread then)
        return fn()  # here, then: the replay's figures matter more than state left on a thread that ends
    thread.join()
    if error:
        raise error[0]
    return result[0]
