"""memprof in a Ray Tune sweep: each trial's peak, its findings and the largest batch that fits,
in the trial's results.

    from memprof.integrations.ray_tune import MemprofStopper, profiled

    tuner = tune.Tuner(profiled(train, budget="24GiB"), param_space={"batch_size": tune.grid_search([32, 256])},
                       run_config=tune.RunConfig(stop=MemprofStopper()))

:func:`profiled` runs the function trainable under memprof. Every ``tune.report(metrics)`` the
trial makes gets memprof's figures so far under ``memprof/`` (Tune flattens the nested dict):
``peak_bytes``, ``warnings``, ``steps`` and, with a budget, ``fits``. When the trial's function
returns, a last result adds what the whole run shows: the findings (``findings``: one
``kind at file:line (variable)`` per warning, ``; ``-joined), ``max_batch_size`` (the largest
batch that fits the budget, as ``memprof run --budget`` predicts it) and ``predicted_peak_bytes``.
:class:`MemprofStopper` stops a trial as soon as its peak passes the budget, so that a sweep run
on a larger card (or on the CPU) drops the configurations that would not fit the target card
before they run out of memory there.

Known limitations:
- ``tune.report`` is looked up on ``ray.tune`` at each call: a trial that bound it before
  (``from ray.tune import report``) reports without memprof's figures until its last result.
- One profiled trial per process at a time (Ray runs each trial in its own worker by default).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

try:
    from ray import tune
    from ray.tune.stopper import Stopper
except ImportError as e:
    raise ImportError("memprof's Ray Tune integration needs Ray Tune: pip install 'memprof[ray]'") from e

from memprof.model import Report
from memprof.model.progress import Progress

PREFIX = "memprof"


def progress_metrics(progress: Progress) -> dict[str, Any]:
    """memprof's figures so far, as a trial's result entries."""
    out: dict[str, Any] = {"peak_bytes": progress.peak_bytes, "warnings": progress.warnings, "steps": progress.steps}
    if progress.fits is not None:
        out["fits"] = progress.fits
    return out


def report_metrics(report: Report) -> dict[str, Any]:
    """What the whole run shows, as a trial's last result entries."""
    found = [f for f in report.findings if f.severity.is_diagnosis]
    out: dict[str, Any] = {
        "peak_bytes": report.peak_bytes, "warnings": len(found), "steps": report.step_count,
        "status": report.status.value,
        "findings": "; ".join(f"{f.kind.value} at {f.file}:{f.line}" + (f" ({f.variable})" if f.variable else "")
                              for f in found),
    }
    budget = report.budget_bytes
    if budget is not None:
        out["fits"] = report.peak_bytes <= budget
    batch = next((r for r in report.recommendations if r.kind.value == "batch_size"), None)
    if batch is not None:
        out["max_batch_size"] = batch.suggested
        out["predicted_peak_bytes"] = batch.predicted_peak_bytes
    return out


def profiled(trainable: Callable[[dict[str, Any]], Any], *, budget: int | str | None = None,
             **track_options: Any) -> Callable[[dict[str, Any]], Any]:
    """The function trainable ``trainable``, run under ``memprof.track(budget=..., **track_options)``."""

    @functools.wraps(trainable)
    def run(config: dict[str, Any]) -> Any:
        from memprof.api import track

        original = tune.report
        session: Any = None

        def report(metrics: dict[str, Any], **kwargs: Any) -> None:
            extra = progress_metrics(session.progress()) if session is not None else {}
            original({**metrics, PREFIX: {**metrics.get(PREFIX, {}), **extra}}, **kwargs)

        tune.report = report
        try:
            with track(budget=budget, **track_options) as session:
                result = trainable(config)
        finally:
            tune.report = original
        if session is not None and session.report is not None:
            original({PREFIX: report_metrics(session.report)})
        return result

    return run


class MemprofStopper(Stopper):  # type: ignore[misc]  # Ray's classes are untyped
    """Stops a trial whose memory peak passed the budget given to :func:`profiled`."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        fits = result.get(f"{PREFIX}/fits", (result.get(PREFIX) or {}).get("fits"))
        return fits is False

    def stop_all(self) -> bool:
        return False
