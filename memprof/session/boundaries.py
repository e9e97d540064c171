"""Where one iteration ends and the next begins, and whether it trains or evaluates.

The iteration model, behind a small interface that the session wires to its hooks:
:meth:`Boundaries.after_optimizer_step`, :meth:`Boundaries.on_model_call`,
:meth:`Boundaries.on_backward` and :meth:`Boundaries.finish`; it tells
:class:`~memprof.session.steps.Steps` where an iteration ends.

Iterations are the steps of the first optimizer that steps; without an optimizer (evaluation,
inference) they are the repeated calls of the outermost model from the same line.

Known limitations:
- Weights updated by hand, LBFGS closures and episodes that backpropagate once are not told
  apart from evaluation loops (the real-code issue rebuilds this model from autograd's and the
  optimizer's boundaries).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import torch

from memprof.collect.modules import RootCall, batch_size_of, call_site
from memprof.collect.sites import user_frame

if TYPE_CHECKING:
    from memprof.session.core import Session


class Boundaries:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.in_loop = False  # the first model call opened the first iteration
        self.backwards = 0
        self.root_calls = 0
        self.primary_optimizer: int | None = None  # id() of the optimizer whose steps are iterations
        self.optimizer_stepped = False  # an optimizer (any) stepped in the open iteration
        self.autocast_used = False
        self._step_since_root = True
        # Each model called since the last optimizer step -> (backwards seen at its call, call site).
        self._called_since_step: dict[int, tuple[int, tuple[int, int] | None]] = {}
        self._last_call_grad = True  # whether the last model call ran with autograd on
        self._last_call_mode: tuple[bool, bool] | None = None  # (autograd on, module.training) of the last

    def new_iteration(self) -> None:
        self.optimizer_stepped = False

    def on_backward(self) -> None:
        self.backwards += 1

    def after_optimizer_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """The optimizer post-hook: the primary optimizer's step ends a training iteration."""
        s = self.session
        self.optimizer_stepped = True
        if self.primary_optimizer is None:
            self.primary_optimizer = id(opt)
        s.optimizers.after_step(opt)
        if id(opt) != self.primary_optimizer:
            return
        self._step_since_root = True
        self._called_since_step = {}
        steps = s.steps
        if not s.detail and not steps.opened_in_detail:
            steps.watch_boundary("train")
        else:
            steps.end("train", sys._getframe(1))

    def on_model_call(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RootCall | None:
        """A call of a model. Returns the call when its output is to be followed."""
        s = self.session
        if s.stopped:
            return None
        try:
            self.root_calls += 1
            key = id(module)
            called = self._called_since_step
            prev = called.get(key)
            grad = torch.is_grad_enabled()
            steps = s.steps
            if (prev is not None and grad and not self._last_call_grad and steps.phase == "eval"
                    and prev[0] == self.backwards):
                # In an evaluation loop (no_grad), the same model called with autograd on: training
                # again. The evaluation's last iteration ends here, not with the next training step.
                # (A no_grad call inside a training step, as for pseudo-labels, is not in this phase.)
                steps.end("eval", sys._getframe(1))
                self._called_since_step = called = {}
                prev = None
            self._last_call_grad = grad
            if prev is None and not s.detail and self.in_loop:
                # Watch mode, the model's first call since an optimizer step: the common case, kept
                # cheap; its call site still marks where an evaluation loop's next iteration begins.
                called[key] = (self.backwards, call_site(user_frame(sys._getframe(1))))
                self._step_since_root = False
                if steps.batch is None:
                    steps.batch = batch_size_of(args, kwargs)
                return None
            call = s.modules.make_call(module, args, kwargs)
            if not self.in_loop:
                self.in_loop = True
                steps.begin(0)
            elif prev is not None and prev[1] == call.call_site and prev[0] == self.backwards:
                # The same call of the same model again (a loop), with no optimizer step and no
                # backward since: that call was an iteration of an evaluation (or inference) loop.
                # Calls from other places (D(real), then D(fake)) belong to one iteration.
                steps.end("eval", sys._getframe(1))
                self._called_since_step = called = {}
            called[key] = (self.backwards, call.call_site)
            if steps.batch is None:
                steps.batch = call.batch_size
            if call.batch_size and not s.tracker.batch_size:
                s.tracker.batch_size = call.batch_size
            self._step_since_root = False
            if torch.is_autocast_enabled() or torch.is_autocast_enabled("cpu"):
                self.autocast_used = True
            mode = (grad, module.training)
            if mode != self._last_call_mode:
                self._last_call_mode = mode
                if s.detail and not s.modules.packing:
                    # Another kind of call (training <-> evaluation): the saved tensors of this one
                    # are not those of the sampled steps. Measured, not inferred, until the boundary.
                    s.tracker.infer_saved = False
                    s.modules.set_pack(True)
            return call
        except Exception as e:
            s.warn(f"internal error at a model call: {e!r}", tb=True)
            return None

    def finish(self) -> None:
        """At the end of a run: record an evaluation iteration still open."""
        s = self.session
        steps = s.steps
        if self.in_loop and not self._step_since_root and self.root_calls and not self.optimizer_stepped:
            # The last iteration of an evaluation loop ends with the script; its end is the last model
            # call's, not the empty memory after the script returned.
            # A run that died in its first training step (an out-of-memory in backward) was training.
            training = steps.phase == "train" and (self.primary_optimizer is not None or self.backwards > 0)
            steps.record("train" if training else "eval", None)
            if steps.iterations and steps.iterations[-1].detailed:
                steps.iterations[-1].end_bytes = s.live_after_call
