"""memprof in Hugging Face ``transformers``: ``Trainer(..., callbacks=[MemprofCallback(json="memprof.json")])``.

:class:`MemprofCallback` profiles ``Trainer.train``: the session starts at ``on_train_begin`` and
stops at ``on_train_end``, so the report has the Trainer's training steps (one per optimizer step,
gradient accumulation included) and the iterations of the evaluations run during training
(``eval_strategy="steps"`` or ``"epoch"``). A ``trainer.evaluate()`` (or ``predict()``) called outside
``train()`` is profiled on its own from its first batch's end to its end (its first batch's forward
is before the first callback), its report replacing the last one. Each epoch's end prints one line
to stderr (the epoch's step peak, its steps, the findings new in it). The report is at
:attr:`MemprofCallback.report`, its files are written where each session stops.

Besides memprof's own findings, the callback looks at what the Trainer's evaluation loop keeps:
where it accumulates every batch's predictions on the device (``compute_metrics`` set, no
``prediction_loss_only``, no ``eval_accumulation_steps``), the report gets an ``accumulated_tensor``
finding on ``all_preds``, at the line that called the Trainer, with the fix.

Importing this module imports ``transformers``; memprof imports it nowhere else.

Known limitations: the Trainer has no callback for an exception, so a ``train()`` that raises
leaves its session open: the report (status ``error``) is then written at the next ``train()``, at
:meth:`MemprofCallback.close` (``callback.close(e)`` in an ``except``), or at the interpreter's exit.
"""

from __future__ import annotations

import atexit
import sys
import weakref
from typing import TYPE_CHECKING, Any

from memprof.integrations._profiling import Profiling, user_frame_site
from memprof.model import Finding, FindingKind, Severity
from memprof.units import fmt_bytes

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError("memprof.integrations.transformers needs transformers and accelerate: "
                      "pip install memprof[transformers]") from e

if TYPE_CHECKING:
    from memprof.model import Report

__all__ = ["MemprofCallback"]

MIN_BATCHES = 3  # an evaluation keeps predictions across at least this many batches to be told


def _tensor_bytes(value: Any, depth: int = 0) -> int:
    """The storage bytes of the tensors in ``value`` (a tensor, or nested lists, tuples and dicts)."""
    if value is None or depth > 4:
        return 0
    if hasattr(value, "untyped_storage"):
        return int(value.untyped_storage().nbytes())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return sum(_tensor_bytes(v, depth + 1) for v in value.values())
    return 0


class _EvalWatch:
    """The bytes the Trainer's evaluation loop holds on the device, batch after batch."""

    def __init__(self) -> None:
        self.held: list[int] = []  # after each batch, the bytes of all_preds' device tensors
        self.moved = False  # eval_accumulation_steps moved them to the CPU at least once
        self.site: tuple[str, int] | None = None

    def batch(self) -> None:
        frame: Any = sys._getframe(2)
        while frame is not None and frame.f_code.co_name != "evaluation_loop":
            frame = frame.f_back
        if frame is None:
            return
        preds = frame.f_locals.get("all_preds")
        if preds is None:
            return
        if getattr(preds, "arrays", None) is not None:
            self.moved = True
        self.held.append(_tensor_bytes(getattr(preds, "tensors", None)))
        if self.site is None:
            self.site = user_frame_site(2)

    def finding(self, step: int | None) -> Finding | None:
        held = self.held
        n = len(held)
        if self.moved or n < MIN_BATCHES or not all(b > a for a, b in zip(held, held[1:], strict=False)):
            return None
        per = (held[-1] - held[0]) // max(n - 1, 1)
        file, line = self.site if self.site is not None else (None, None)
        return Finding(
            kind=FindingKind.ACCUMULATED_TENSOR, severity=Severity.WARNING, file=file, line=line,
            variable="all_preds", bytes=held[-1], step=step,
            message=(f"the Trainer's evaluation loop keeps the logits of every eval batch on the device "
                     f"(+{fmt_bytes(per)} per batch, {fmt_bytes(held[-1])} after {n} batches), until "
                     f"compute_metrics runs"),
            advice=("set `prediction_loss_only=True` in TrainingArguments where no metric needs the "
                    "predictions, else `eval_accumulation_steps=N` to move them to the CPU every N batches "
                    "(or `preprocess_logits_for_metrics` to keep only what the metric needs, e.g. the argmax)"),
            extra={"source": "transformers.Trainer.evaluation_loop", "batches": n})


def _at_exit(ref: weakref.ref[MemprofCallback]) -> None:
    cb = ref()
    if cb is not None:
        cb._abandoned(at_exit=True)


class MemprofCallback(TrainerCallback):  # type: ignore[misc]
    """Profile ``Trainer.train`` (and a standalone ``evaluate``) with memprof.

    ``json``/``html``: where the report is written; ``budget``: the memory to plan for
    (``"24GiB"``); ``summary``: print the terminal summary to stderr at the end; ``epoch_line``:
    print the per-epoch line. Other keywords go to :func:`memprof.track` (``memory_limit``,
    ``detail``, ``name``).
    """

    def __init__(self, json: str | None = None, html: str | None = None, budget: int | str | None = None,
                 summary: bool = False, epoch_line: bool = True, **options: Any) -> None:
        self._profiling = Profiling(json=json, html=html, budget=budget, summary=summary, **options)
        self.epoch_line = epoch_line
        self._owner: str | None = None  # "train", or "evaluate" for a session of a standalone evaluation
        self._eval: _EvalWatch | None = None
        self._findings: list[Finding] = []
        self._atexit = False
        self._epoch = 0  # the training epochs ended in this session

    @property
    def report(self) -> Report | None:
        """The last session's report (None until one ends)."""
        return self._profiling.report

    def close(self, exc: BaseException | None = None) -> Report | None:
        """Stop a session still open and write its report: after a ``train()`` that raised, pass the
        exception (``except Exception as e: callback.close(e)``) for the report's status."""
        if not self._profiling.running:
            return self.report
        findings, self._findings, self._owner, self._eval = self._findings, [], None, None
        return self._profiling.stop(exc, findings=findings)

    def _abandoned(self, at_exit: bool = False) -> None:
        """A session whose ``train()`` never reached ``on_train_end``: it raised, or was interrupted."""
        if self._owner != "train" or not self._profiling.running:
            self.close()
            return
        exc = getattr(sys, "last_value", None) if at_exit else None  # the uncaught exception, at exit
        self.close(exc if isinstance(exc, BaseException) else RuntimeError(
            "Trainer.train() did not end: it raised or was interrupted"))

    def _start(self, owner: str) -> None:
        self._abandoned()
        self._owner = owner
        self._findings = []
        self._profiling.start()
        if not self._atexit:
            atexit.register(_at_exit, weakref.ref(self))
            self._atexit = True

    # -- training ----------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start("train")
        self._epoch = 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._profiling.poll()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        period = self._profiling.period() if self._owner == "train" else None
        if period is not None and self.epoch_line and getattr(state, "is_world_process_zero", True):
            print(period.line(f"epoch {self._epoch}"), file=sys.stderr, flush=True)
        self._epoch += 1

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._owner == "train":
            self.close()

    # -- evaluation --------------------------------------------------------------------------------
    def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._owner is None:  # an evaluation outside train(): profiled from here
            self._start("evaluate")
        if self._eval is None:
            self._eval = _EvalWatch()
        try:
            self._eval.batch()
        except Exception:
            self._eval = None

    def _evaluation_done(self, state: Any) -> None:
        watch, self._eval = self._eval, None
        if watch is not None:
            found = watch.finding(getattr(state, "global_step", None))
            if found is not None and not any(f.file == found.file and f.line == found.line for f in self._findings):
                self._findings.append(found)
        if self._owner == "evaluate":
            self.close()

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._evaluation_done(state)

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        self._evaluation_done(state)
