"""The largest batch size that fits the budget, and its predicted peak (from the batch model,
:mod:`memprof.advise.batch_model`)."""

from __future__ import annotations

from typing import Any

from memprof.advise.advisor import Inputs
from memprof.advise.batch_model import BatchModel
from memprof.advise.budget import describe
from memprof.model import Recommendation, RecommendationKind
from memprof.model.report import AdvisorModel, Budget
from memprof.model.run import RunData
from memprof.units import fmt_bytes


class BatchSize:
    """The batch model's figures whenever there is one; the advice only with a budget to fit."""

    name = "batch_size"

    def advise(self, inputs: Inputs, out: AdvisorModel) -> list[Recommendation]:
        model = inputs.batch
        if model is None:
            return []
        out.batch = model.figures()
        if inputs.budget is None:
            return []
        rec = recommend(inputs.data, model, inputs.budget)
        if rec is None:
            return []
        out.batch.largest_batch_size = rec.suggested
        return [rec]


CHECK_TOLERANCE = 0.02  # the replay stands in for the loss and the data: it confirms within this share


def confirmed(model: BatchModel, b: int, budget: int) -> int:
    """``b``, or the largest batch size below it that the replay also fits in ``budget`` (its
    line through the measured peak, :func:`~memprof.advise.batch_model.anchored`): a suggestion
    the replay at another batch size does not confirm is not given."""
    check = model.check
    if check is None or check.predict(b) <= budget * (1 + CHECK_TOLERANCE):
        return b
    while b > 1 and check.predict(b) > budget:
        b = max(1, min(b - 1, check.largest(budget) or 0))
    return b


def line_through(model: BatchModel, current: int, b: int, peak: int) -> tuple[int, float]:
    """(fixed bytes, bytes per sample) of the line through the predicted peaks at ``current`` and at
    ``b``: at the current batch it gives the peak measured there, at ``b`` the one predicted."""
    now = model.predict(current)
    if b != current:
        per_sample = (peak - now) / (b - current)
        fixed = now - per_sample * current
        if fixed >= 0 and per_sample >= 0:
            return int(round(fixed)), per_sample
    f, s = model.point(b)
    return f + model.extra, s / b if b else 0.0


def recommend(data: RunData, model: BatchModel, budget: Budget) -> Recommendation | None:
    current = (data.oom.batch_size if data.oom is not None and data.oom.batch_size else None) or model.b0
    b = model.largest(budget.bytes)
    if b is None:
        return None
    now = model.predict(current)
    where = describe(budget)
    extra: dict[str, Any] = {"model_source": model.source, "current_predicted_peak_bytes": now}
    if b == 0:
        one = model.predict(1)
        f, _ = model.point(1)
        return Recommendation(
            kind=RecommendationKind.BATCH_SIZE, current=current, suggested=0, budget_bytes=budget.bytes,
            predicted_peak_bytes=one, extra=extra,
            message=(f"no batch size fits {where}: even batch size 1 needs {fmt_bytes(one)}, "
                     f"{fmt_bytes(f)} of it independent of the batch (parameters, gradients, optimizer "
                     f"state); lower those first (mixed precision, a leaner optimizer)"),
        )
    unconfirmed = b
    b = confirmed(model, b, budget.bytes)
    peak = model.predict(b)
    if model.check is not None:
        extra.update({"replay_batch_size": model.check_batch, "replay_predicted_peak_bytes": model.check.predict(b)})
        if b < unconfirmed:
            extra["unconfirmed_batch_size"] = unconfirmed
            peak = max(peak, model.check.predict(b))
    f, per_sample = line_through(model, current, b, peak)
    extra.update({"fixed_bytes": f, "per_sample_bytes": int(per_sample)})
    basis = (f"{fmt_bytes(f)} fixed + {fmt_bytes(per_sample)} per sample at the peak"
             + (", from a replay of the model (the run died before a full step)" if model.source == "replay" else "")
             + (", from the failed step alone: a lower bound, it may still not fit" if model.lower_bound else "")
             + (f"; not {unconfirmed}: the replay of the step at batch size {model.check_batch} does not confirm it"
                if b < unconfirmed else ""))
    if b >= 8 and b % 8:
        b8 = b - b % 8
        extra["suggested_multiple_of_8"] = b8
        extra["multiple_of_8_predicted_peak_bytes"] = model.predict(b8)
    if now > budget.bytes:
        head = f"batch size {current} does not fit {where} (predicted peak {fmt_bytes(now)}); batch size {b} does"
    elif b > current:
        head = f"batch size {current} fits {where} with room to spare: up to {b} fits"
    else:
        head = f"batch size {current} is the largest that fits {where}"
    return Recommendation(
        kind=RecommendationKind.BATCH_SIZE, current=current, suggested=b, budget_bytes=budget.bytes,
        predicted_peak_bytes=peak, extra=extra,
        message=f"{head}: predicted peak {fmt_bytes(peak)} ({basis})",
    )
