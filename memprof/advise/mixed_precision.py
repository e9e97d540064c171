"""Mixed precision: the peak under autocast, predicted.

Autocast changes more than "activations take half": matmuls and convolutions run in half
precision (bf16/fp16 activations, a cached half copy of each weight), losses and some reductions
run in float32 (cross-entropy upcasts the logits, a full copy), elementwise ops follow their
inputs (a float32 residual stream stays float32), and parameters, gradients and optimizer state
stay float32. Rather than a rule of thumb, the advisor replays the model's training step under
``torch.autocast`` on fake tensors (:mod:`memprof.collect.replay`) and under the run's own
precision, and moves the measured peak by the difference.
"""

from __future__ import annotations

from typing import Any

from memprof.advise.advisor import Inputs
from memprof.advise.batch_model import BatchModel
from memprof.advise.budget import describe
from memprof.collect.replay import ReplaySet
from memprof.model import Recommendation, RecommendationKind
from memprof.model.report import AdvisorModel, Budget
from memprof.model.run import RunData
from memprof.units import fmt_bytes

MIN_SAVING_SHARE = 0.05


class AmpModel:
    """The peak at batch ``b`` under autocast: the run's own line moved by the replays' difference."""

    def __init__(self, model: BatchModel | None, replays: ReplaySet) -> None:
        assert replays.base is not None and replays.amp is not None
        self.model = model
        self.base = replays.base
        self.amp = replays.amp

    def measured(self, b: float) -> int:
        if self.model is not None and not self.model.lower_bound:
            return self.model.predict(b)
        return self.base.predict(b)

    def predict(self, b: float) -> int:
        return max(self.measured(b) + self.amp.predict(b) - self.base.predict(b), 0)

    def largest(self, budget: int, start: int) -> int:
        """The largest batch size whose predicted autocast peak fits (0: none)."""
        if self.predict(1) > budget:
            return 0
        lo, hi = 1, max(start, 1)
        while self.predict(hi) <= budget and hi < 1 << 24:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.predict(mid) <= budget:
                lo = mid
            else:
                hi = mid
        return lo


class MixedPrecision:
    name = "mixed_precision"

    def advise(self, inputs: Inputs, out: AdvisorModel) -> list[Recommendation]:
        rec, figures = recommend(inputs.data, inputs.batch, inputs.replays, inputs.budget)
        if figures:
            out.figures[self.name] = figures
        return [rec] if rec is not None else []


def recommend(data: RunData, model: BatchModel | None, replays: ReplaySet | None,
              budget: Budget | None) -> tuple[Recommendation | None, dict[str, Any]]:
    figures: dict[str, Any] = {}
    if data.autocast_used or replays is None or replays.base is None or replays.amp is None:
        return None, figures
    amp = AmpModel(model, replays)
    b0 = model.b0 if model is not None else (replays.call.batch_size if replays.call else None) or replays.base.batch
    current = (data.oom.batch_size if data.oom is not None and data.oom.batch_size else None) or b0
    measured = amp.measured(current)
    predicted = amp.predict(current)
    saving = measured - predicted
    cuda = data.device_type == "cuda"
    dtype = replays.amp_dtype or ("float16" if cuda else "bfloat16")
    figures.update({"dtype": dtype, "batch_size": current, "measured_peak_bytes": measured,
                    "predicted_peak_bytes": predicted, "replay_batch_size": replays.base.batch,
                    "replay_peak_bytes": replays.base.predict(current),
                    "replay_autocast_peak_bytes": replays.amp.predict(current)})
    if saving < MIN_SAVING_SHARE * measured:
        return None, figures
    how = ('torch.autocast("cuda", dtype=torch.float16) around the forward pass and the loss, with '
           'torch.amp.GradScaler (or dtype=torch.bfloat16 on Ampere and newer, no scaler)') if cuda else \
          'torch.autocast("cpu", dtype=torch.bfloat16) around the forward pass and the loss'
    extra: dict[str, Any] = {"dtype": dtype, "saving_bytes": saving}
    tail = ""
    if budget is not None:
        b = amp.largest(budget.bytes, current)
        extra["suggested_batch_size"] = b
        extra["suggested_batch_predicted_peak_bytes"] = amp.predict(b) if b else None
        figures["largest_batch_size"] = b
        if b:
            tail = f"; then batch size up to {b} fits {describe(budget)} (predicted peak {fmt_bytes(amp.predict(b))})"
    rec = Recommendation(
        kind=RecommendationKind.MIXED_PRECISION, predicted_peak_bytes=predicted, current="float32", suggested=dtype,
        message=(f"{how}: predicted peak {fmt_bytes(predicted)} at batch size {current} "
                 f"({fmt_bytes(-saving, signed=True)}, {saving / measured:.0%} less; parameters, gradients and "
                 f"optimizer state stay float32){tail}"),
        extra=extra,
    )
    return rec, figures
