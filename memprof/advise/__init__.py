"""The advisor: what to change, each with its predicted peak.

Each kind of advice is one advisor (:mod:`~memprof.advise.advisor`), in one file, listed in
:mod:`~memprof.advise.registry`:

- :mod:`~memprof.advise.batch_size`: the largest batch size that fits;
- :mod:`~memprof.advise.mixed_precision`: the peak under autocast;
- :mod:`~memprof.advise.gradient_checkpointing`: the blocks that hold the activations, and the saving;
- :mod:`~memprof.advise.optimizer`: the optimizer state's share, and leaner optimizers;
- :mod:`~memprof.advise.allocator`: CUDA's cache, fragmentation, ``empty_cache``.

They share what :func:`~memprof.advise.advisor.plan` works out once: the memory to plan for
(:mod:`~memprof.advise.budget`: ``--budget``, ``--memory-limit``, the CUDA device's usable
memory), the batch model (:mod:`~memprof.advise.batch_model`: measured, or from a replay), and the
fake-tensor replays of the training step that the session made while the model was alive
(:mod:`memprof.collect.replay`).

``advise`` never raises for one failing advisor: its error goes into ``Advice.model.errors``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memprof.advise import registry
from memprof.advise.advisor import plan
from memprof.model import Recommendation
from memprof.model.report import AdvisorModel
from memprof.model.run import RunData


@dataclass
class Advice:
    recommendations: list[Recommendation] = field(default_factory=list)
    model: AdvisorModel | None = None  # the figures the predictions rest on; None: there are none


def advise(data: RunData) -> Advice:
    """Every advisor's recommendations, in the registry's order, and the figures they rest on."""
    out = AdvisorModel()
    inputs = plan(data, out)
    recs: list[Recommendation] = []
    for advisor in registry.ADVISORS:
        try:
            recs.extend(advisor.advise(inputs, out))
        except Exception as e:
            out.errors.append(f"{advisor.name}: {e!r}")
    return Advice(recommendations=recs, model=None if out == AdvisorModel() else out)
