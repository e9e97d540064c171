"""Gradient checkpointing: which modules hold the activations, and what checkpointing them saves.

The blocks to checkpoint are the repeated ones (the layers of a ``ModuleList`` or ``Sequential``:
siblings of one type) that saved the most for backward in the run; a model without repeated blocks
gets its largest top-level children. The saving is measured on a replay of the training step with
those blocks checkpointed (``torch.utils.checkpoint``, non-reentrant), against the same replay
without: checkpointing keeps each block's input instead of its activations, and recomputes one
block's activations at a time in backward, which the replay counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from memprof.advise.batch_size import BatchModel
from memprof.advise.replay import ReplaySet
from memprof.collect.timeline import RunData
from memprof.report.model import Recommendation, RecommendationKind
from memprof.units import fmt_bytes

MIN_SAVING_SHARE = 0.05


def _activation_bytes(stats: Sequence[Any]) -> dict[int, int]:
    return {int(getattr(s, "module_id", 0)): int(getattr(s, "activation_bytes", 0)) for s in stats}


def choose_blocks(model: nn.Module, stats: Sequence[Any], limit: int = 64) -> list[tuple[str, int]]:
    """(qualified name in ``model``, activation bytes) of the modules worth checkpointing: the
    repeated blocks of a container (the layers of a ``ModuleList``/``Sequential``, siblings of one
    type) that saved the most; without such blocks, the largest saver below the model that has
    submodules of its own (a leaf alone recomputes nothing worth it)."""
    act = _activation_bytes(stats)
    best: list[tuple[str, int]] = []
    best_total = 0
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, (nn.ModuleList, nn.Sequential)):
            continue
        groups: dict[type, list[tuple[str, int]]] = {}
        for name, child in parent.named_children():
            if next(child.children(), None) is None:
                continue  # a leaf (Linear, ReLU): checkpointing it alone saves little
            groups.setdefault(type(child), []).append(
                (f"{parent_name}.{name}" if parent_name else name, act.get(id(child), 0)))
        for members in groups.values():
            total = sum(n for _, n in members)
            if len(members) >= 2 and total > best_total:
                best, best_total = members, total
    if best:
        return [(n, b) for n, b in best if b > 0][:limit]
    inner = [(name, act.get(id(m), 0)) for name, m in model.named_modules()
             if name and next(m.children(), None) is not None]
    inner = [(n, b) for n, b in inner if b > 0]
    return [max(inner, key=lambda nb: nb[1])] if inner else []


def _span(names: list[str]) -> str:
    if len(names) <= 3:
        return ", ".join(names)
    return f"{names[0]} … {names[-1]} ({len(names)} blocks)"


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
