"""memprof in Lightning: ``Trainer(callbacks=[MemprofCallback(json="memprof.json")])``.

:class:`MemprofCallback` profiles ``Trainer.fit``: the session starts at ``on_fit_start`` (after
the model is set up on its device, before the sanity check), each training epoch's end prints one
line to stderr (the epoch's step peak, its steps, the findings new in it) and, where the trainer has
a logger, logs the same figures as ``memprof/epoch_peak_bytes``, ``memprof/epoch_steps`` and
``memprof/new_findings``; the session stops at ``on_fit_end``, or at ``on_exception`` when fit raises
(an out-of-memory included: its post-mortem is in the report), and writes the report's files. The
report is at :attr:`MemprofCallback.report`. The findings are memprof's: a ``LightningModule`` that
keeps graph-carrying outputs in ``self`` (``self.outputs.append(logits)``) gets the
``accumulated_tensor`` finding on ``model.outputs``, as under ``memprof run``.

Lightning's batch-size and learning-rate finders (``Tuner(trainer).scale_batch_size(model)``, or the
``BatchSizeFinder`` callback) run their trials before this callback's ``on_fit_start`` (Lightning
orders tuner callbacks first), so the trials are never in the report: the profile starts with the
batch size they chose.

Works with ``lightning`` (``lightning.pytorch``) and with the standalone ``pytorch_lightning``: the
class is a callback of both where both are installed. Importing this module imports Lightning;
memprof imports it nowhere else.

Known limitations: one process's view (under DDP each rank profiles itself; only rank 0 prints
its epoch line); ``validate``/``test``/``predict`` runs outside ``fit`` are not profiled.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from memprof.integrations._profiling import Profiling

_bases: list[type] = []
try:
    from lightning.pytorch import Callback as _LightningCallback

    _bases.append(_LightningCallback)
except ImportError:
    pass
try:
    from pytorch_lightning import Callback as _PLCallback

    _bases.append(_PLCallback)
except ImportError:
    pass
if not _bases:
    raise ImportError("memprof.integrations.lightning needs Lightning: pip install memprof[lightning]")

if TYPE_CHECKING:
    from lightning.pytorch import Callback as _Base

    from memprof.model import Report
else:
    _Base = type("_Base", tuple(_bases), {})

__all__ = ["MemprofCallback"]


class MemprofCallback(_Base):
    """Profile ``Trainer.fit`` with memprof.

    ``json``/``html``: where the report is written at the end of fit (also when it raises);
    ``budget``: the memory to plan for (``"24GiB"``: batch-size advice); ``summary``: print the
    terminal summary to stderr at the end; ``epoch_line``: print the per-epoch line. Other keywords
    go to :func:`memprof.track` (``memory_limit``, ``detail``, ``name``).
    """

    def __init__(self, json: str | None = None, html: str | None = None, budget: int | str | None = None,
                 summary: bool = False, epoch_line: bool = True, **options: Any) -> None:
        super().__init__()
        self._profiling = Profiling(json=json, html=html, budget=budget, summary=summary, **options)
        self.epoch_line = epoch_line

    @property
    def report(self) -> Report | None:
        """The last fit's report (None until a fit ends)."""
        return self._profiling.report

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._profiling.start()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._profiling.poll()

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        period = self._profiling.period()  # None in a tuner's trial runs: no session yet
        if period is None:
            return
        if self.epoch_line and getattr(trainer, "is_global_zero", True):
            print(period.line(f"epoch {trainer.current_epoch}"), file=sys.stderr, flush=True)
        metrics = {"memprof/epoch_peak_bytes": float(period.peak_bytes), "memprof/epoch_steps": float(period.steps),
                   "memprof/new_findings": float(period.new_findings)}
        for logger in getattr(trainer, "loggers", None) or ():
            try:
                logger.log_metrics(metrics, step=trainer.global_step)
            except Exception as e:
                print(f"memprof: could not log to {type(logger).__name__}: {e}", file=sys.stderr)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._profiling.stop()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._profiling.stop(exception)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit" and self._profiling.running:  # fit left without on_fit_end nor on_exception
            self._profiling.stop()
