"""Gradient checkpointing: which modules hold the activations, and what checkpointing them saves.

The blocks to checkpoint are chosen while the model lives (:func:`memprof.collect.replay.choose_blocks`):
the repeated ones (the layers of a ``ModuleList`` or ``Sequential``: siblings of one type) that
saved the most for backward in the run; a model without repeated blocks gets its largest
top-level children. The saving is measured on a replay of the training step with
those blocks checkpointed (``torch.utils.checkpoint``, non-reentrant), against the same replay
without: checkpointing keeps each block's input instead of its activations, and recomputes one
block's activations at a time in backward, which the replay counts.
"""

from __future__ import annotations

from typing import Any

from memprof.advise.advisor import Inputs
from memprof.advise.batch_model import BatchModel
from memprof.collect.replay import ReplaySet
from memprof.model import Recommendation, RecommendationKind
from memprof.model.report import AdvisorModel
from memprof.model.run import RunData
from memprof.units import fmt_bytes

MIN_SAVING_SHARE = 0.05


def _span(names: list[str]) -> str:
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]} … {names[-1]} ({len(names)} blocks)"


class GradientCheckpointing:
    name = "gradient_checkpointing"

    def advise(self, inputs: Inputs, out: AdvisorModel) -> list[Recommendation]:
        rec, figures = recommend(inputs.data, inputs.batch, inputs.replays)
        if figures:
            out.figures[self.name] = figures
        return [rec] if rec is not None else []


def recommend(data: RunData, model: BatchModel | None, replays: ReplaySet | None) -> tuple[Recommendation | None, dict[str, Any]]:
    figures: dict[str, Any] = {}
    if replays is None or replays.base is None or replays.checkpoint is None or not replays.checkpoint_names:
        return None, figures
    b0 = model.b0 if model is not None else (replays.call.batch_size if replays.call else None) or replays.base.batch
    measured = model.predict(b0) if model is not None and not model.lower_bound else replays.base.predict(b0)
    delta = replays.checkpoint.predict(b0) - replays.base.predict(b0)
    predicted = max(measured + delta, 0)
    names = replays.checkpoint_labels or list(replays.checkpoint_names)
    figures.update({"modules": names, "activation_bytes": replays.checkpoint_activation_bytes,
                    "predicted_peak_bytes": predicted, "saving_bytes": measured - predicted, "batch_size": b0})
    saving = measured - predicted
    if saving < MIN_SAVING_SHARE * measured:
        return None, figures
    kind = f" ({', '.join(replays.checkpoint_types)})" if replays.checkpoint_types else ""
    rec = Recommendation(
        kind=RecommendationKind.GRADIENT_CHECKPOINTING, predicted_peak_bytes=predicted,
        suggested=names,
        message=(f"gradient checkpointing of {_span(names)}{kind}, which saved {fmt_bytes(replays.checkpoint_activation_bytes)} "
                 f"for backward: predicted peak {fmt_bytes(predicted)} ({fmt_bytes(-saving, signed=True)}, "
                 f"{saving / measured:.0%} less) at batch size {b0}, for about a third more compute; call each as "
                 f"torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)"),
        extra={"saving_bytes": saving, "modules": names},
    )
    return rec, figures
