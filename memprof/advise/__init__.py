"""The advisor: what to change, each with its predicted peak.

One module per kind of advice, each a function of the run's :class:`RunData`:

- :mod:`~memprof.advise.budget`: the memory to plan for (``--budget``, ``--memory-limit``, the
  CUDA device's usable memory);
- :mod:`~memprof.advise.batch_size`: the batch model (measured frontier, or a replay) and the
  largest batch size that fits;
- :mod:`~memprof.advise.precision`: the peak under autocast;
- :mod:`~memprof.advise.checkpointing`: the blocks that hold the activations, and the saving;
- :mod:`~memprof.advise.optimizer`: the optimizer state's share, and leaner optimizers;
- :mod:`~memprof.advise.allocator`: CUDA's cache, fragmentation, ``empty_cache``;
- :mod:`~memprof.advise.replay`: the fake-tensor replays that predictions of unmeasured variants
  rest on (made by the session during the run, while the model is alive).

``advise`` never raises for one failing piece: its error goes into ``Advice.model["errors"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memprof.collect.timeline import RunData
from memprof.report.model import Recommendation


@dataclass
class Advice:
    recommendations: list[Recommendation] = field(default_factory=list)
    model: dict[str, Any] | None = None  # the figures the predictions rest on


def advise(data: RunData) -> Advice:
    from memprof.advise import allocator, batch_size, checkpointing, optimizer, precision
    from memprof.advise.budget import plan_budget
    from memprof.advise.replay import ReplaySet

    model: dict[str, Any] = {}
    errors: list[str] = []
    recs: list[Recommendation] = []
    replays = data.replays if isinstance(data.replays, ReplaySet) else None
    budget = plan_budget(data)
    if budget is not None:
        model["budget"] = {"bytes": budget.bytes, "source": budget.source, **budget.parts,
                           **({"note": budget.note} if budget.note else {})}
    bm = None
    try:
        bm = batch_size.batch_model(data, replays)
        if bm is not None:
            model["batch"] = bm.to_dict()
            model["batch"]["predicted_peak_bytes"] = bm.predict(bm.b0)
            if budget is not None:
                rec = batch_size.recommend(data, bm, budget)
                if rec is not None:
                    recs.append(rec)
                    model["batch"]["largest_batch_size"] = rec.suggested
    except Exception as e:
        errors.append(f"batch_size: {e!r}")
    try:
        rec, figures = precision.recommend(data, bm, replays, budget)
        recs.extend([rec] if rec is not None else [])
        model.update({"mixed_precision": figures} if figures else {})
    except Exception as e:
        errors.append(f"mixed_precision: {e!r}")
    try:
        rec, figures = checkpointing.recommend(data, bm, replays)
        recs.extend([rec] if rec is not None else [])
        model.update({"gradient_checkpointing": figures} if figures else {})
    except Exception as e:
        errors.append(f"gradient_checkpointing: {e!r}")
    try:
        found, figures = optimizer.recommend(data, bm)
        recs.extend(found)
        model.update({"optimizer": figures} if figures else {})
    except Exception as e:
        errors.append(f"optimizer: {e!r}")
    try:
        found, figures = allocator.recommend(data)
        recs.extend(found)
        model.update({"allocator": figures} if figures else {})
    except Exception as e:
        errors.append(f"allocator: {e!r}")
    if replays is not None:
        model["replay"] = {
            "batch_size": replays.base.batch if replays.base else None, "seconds": round(replays.seconds, 3),
            "autocast_dtype": replays.amp_dtype or None, "checkpointed": replays.checkpoint_names,
            "zero_grad": "in place" if replays.keep_grads else "to None",
            **({"errors": replays.errors} if replays.errors else {}),
        }
    if errors:
        model["errors"] = errors
    return Advice(recommendations=recs, model=model or None)

