"""The shape of an advisor, and what every advisor reads.

An advisor is one kind of advice. It reads the run and the shared analyses (:class:`Inputs`),
returns its recommendations, and puts the figures they rest on into the advisor model
(:class:`~memprof.model.report.AdvisorModel`), under its name: they are the report's
``advisor[name]``, for a user to check a prediction. :mod:`memprof.advise.registry` lists the
advisors; :func:`memprof.advise.advise` runs them in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from memprof.advise.batch_model import BatchModel, batch_model
from memprof.advise.budget import plan_budget
from memprof.collect.replay import ReplaySet
from memprof.model import Recommendation
from memprof.model.report import AdvisorModel, Budget, ReplayFigures
from memprof.model.run import RunData


@dataclass
class Inputs:
    """The run, and what several advisors share: the replays of its training step, the memory to
    plan for, and the batch model (None: not known, or its planning failed)."""

    data: RunData
    replays: ReplaySet | None = None
    budget: Budget | None = None
    batch: BatchModel | None = None


class Advisor(Protocol):
    name: str  # its figures' key in the advisor model and the report's JSON; its errors' prefix

    def advise(self, inputs: Inputs, out: AdvisorModel) -> list[Recommendation]:
        """Its recommendations, in the order the report lists them (none: nothing worth changing);
        the figures they rest on go into ``out.figures[name]``. It may raise: the error is then
        noted in ``out.errors`` and the next advisor runs."""
        ...


def plan(data: RunData, out: AdvisorModel) -> Inputs:
    """The advisors' shared inputs, with their figures in ``out``. What fails is left None, and its
    error noted in ``out.errors`` under the advisor it belongs to."""
    replays = data.replays if isinstance(data.replays, ReplaySet) else None
    inputs = Inputs(data=data, replays=replays)
    try:
        inputs.budget = out.budget = plan_budget(data)
    except Exception as e:
        out.errors.append(f"budget: {e!r}")
    try:
        inputs.batch = batch_model(data, replays)
    except Exception as e:
        out.errors.append(f"batch_size: {e!r}")
    if replays is not None:
        out.replay = ReplayFigures(
            batch_size=replays.base.batch if replays.base else None, seconds=round(replays.seconds, 3),
            autocast_dtype=replays.amp_dtype or None, checkpointed=list(replays.checkpoint_names),
            zero_grad="in place" if replays.keep_grads else "to None", errors=list(replays.errors))
    return inputs
