"""The batch model: the peak at any batch size, from what the run measured (or a replay).

The batch model is measured, not assumed. The storage tracker marks every storage that follows
the batch (``scaled``: its shape holds the batch, or an op made it from a storage that does, as an
LSTM's workspace of flat bytes, unless it has a parameter's size) and records ``(live, scaled
live)`` at every local maximum of live memory in each detailed iteration; each iteration keeps the points that can hold its peak at some
batch size (its frontier). At batch ``b`` a point becomes ``fixed + scaled * b / b0``, and the peak
is the largest point: parameters, gradients and optimizer state stay (the first step's optimizer
state creation included: its points are in iteration 0's frontier), activations scale, and the
point that holds the peak may change with ``b`` (an optimizer step at small batches, the backward
pass at large ones).

When the run died before completing an iteration (an out-of-memory at the first step), the
frontier of the step comes from a replay of the model on fake tensors
(:mod:`memprof.collect.replay`), plus what the run held outside the model (a data set, the
targets); what the failing step had already reached is a lower bound on top. When it died later,
the step that died is the highest of the steps measured before it, that replay (two steps: the
optimizer state the first ``step()`` makes is held through the second's backward) and what it
had reached.

A measured model is checked by the replay at another batch size (a prime), its line drawn through
the measured peak at b0 (:func:`anchored`, ``BatchModel.check``): a suggestion the replay does not
confirm is not given (:func:`memprof.advise.batch_size.confirmed`).

The batch model is a shared input of the advisors (:class:`memprof.advise.advisor.Inputs`): the
batch size's, the optimizer's, mixed precision's and gradient checkpointing's predictions start
from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from memprof.collect.replay import ReplaySet
from memprof.collect.replay_step import ReplayResult
from memprof.model.report import BatchFigures
from memprof.model.run import IterationRecord, OomCapture, RunData, frontier

AGREE = 0.005  # measured and replayed batch lines this close: the measured one stands


@dataclass
class BatchModel:
    """``peak(b) = extra + max(fixed + scaled * b / b0)`` over ``points``."""

    b0: int
    points: list[tuple[int, int]]  # (fixed bytes, scaled bytes at b0)
    source: str  # "measured", "replay" or "partial"
    extra: int = 0  # CUDA: the allocator's rounding, added to every prediction
    lower_bound: bool = False  # only a failing step's partial data: the true peak is higher
    iterations: list[int] = field(default_factory=list)
    # The replay of the step at another batch size, anchored at this model's peak at b0: what a
    # suggestion must also fit (:func:`anchored`); None when there is no replay to check against.
    check: BatchModel | None = None
    check_batch: int | None = None  # the batch size the check replayed

    def predict(self, b: float) -> int:
        return self.extra + int(math.ceil(max(f + s * b / self.b0 for f, s in self.points)))

    def point(self, b: float) -> tuple[int, int]:
        """(fixed, scaled bytes at b) of the point holding the peak at ``b``."""
        f, s = max(self.points, key=lambda p: p[0] + p[1] * b / self.b0)
        return f, int(s * b / self.b0)

    @property
    def scales(self) -> bool:
        return any(s > 0 for _, s in self.points)

    def largest(self, budget: int) -> int | None:
        """The largest integer batch size whose predicted peak fits; 0 when none does; None when
        the batch size does not change the peak."""
        if not self.scales:
            return None
        room = budget - self.extra
        bound = math.inf
        for f, s in self.points:
            if s <= 0:
                if f > room:
                    return 0
                continue
            bound = min(bound, (room - f) * self.b0 / s)
        if bound < 1:
            return 0
        b = int(math.floor(bound + 1e-9))
        while b > 0 and self.predict(b) > budget:
            b -= 1
        return b

    def figures(self) -> BatchFigures:
        """What the advisor model shows of it: its points, and its prediction at ``b0``."""
        return BatchFigures(reference_batch_size=self.b0, source=self.source, extra_bytes=self.extra,
                            lower_bound=self.lower_bound, iterations=list(self.iterations),
                            points=sorted(self.points), predicted_peak_bytes=self.predict(self.b0))


def anchored(model: BatchModel, base: ReplayResult) -> BatchModel:
    """The replay's line through ``model``'s peak at its b0: how the peak moves with the batch as
    the replay (at another batch size, on fake tensors) sees it, from where the run measured it."""
    b0 = model.b0
    shift = model.predict(b0) - model.extra - base.predict(b0)
    points = frontier([(f + shift, int(s * b0 / base.batch)) for f, s in base.frontier])
    return BatchModel(b0=b0, points=points, source="measured+replay", extra=model.extra,
                      iterations=list(model.iterations))


def _usable(it: IterationRecord, b0: int, failed_step: int | None) -> bool:
    if not it.detailed or not it.frontier or it.batch_size != b0:
        return False
    return failed_step is None or it.index < failed_step


def _replayed(base: ReplayResult, b0: int, oom: OomCapture | None) -> list[tuple[int, int]]:
    """The replay's points at b0, with what the run held outside the model (a data set, the targets)."""
    outside_fixed = oom.pre_loop_fixed_bytes if oom is not None else 0
    inputs_b0 = base.input_bytes * b0 / base.batch
    outside_scaled = max((oom.pre_loop_scaled_bytes if oom is not None else 0) - inputs_b0, 0)
    return [(f + outside_fixed, int(s * b0 / base.batch + outside_scaled)) for f, s in base.frontier]


def batch_model(data: RunData, replays: ReplaySet | None = None) -> BatchModel | None:
    """The batch model of this run: measured when an iteration completed, else replayed."""
    oom = data.oom
    b0 = data.batch_size
    if oom is not None and oom.batch_size and not b0:
        b0 = oom.batch_size
    if not b0:
        return None
    failed = oom.step if oom is not None else None
    its = [it for it in data.iterations if _usable(it, b0, failed)]
    points: list[tuple[int, int]] = [(data.pre_loop_peak, 0)] if data.pre_loop_peak else []
    partial = list(oom.partial_frontier) if oom is not None and oom.batch_size in (None, b0) else []
    base = replays.base if replays is not None else None
    if its:
        for it in its:
            points.extend(it.frontier)
        points.extend(partial)
        extra = 0
        if data.device_type == "cuda":
            gaps = [it.cuda_allocated_peak - it.peak_bytes for it in its if it.cuda_allocated_peak]
            extra = max([0, *gaps])
        model = BatchModel(b0=b0, points=frontier(points), source="measured", extra=extra,
                           iterations=[it.index for it in its])
        if base is None:
            return model
        hybrid = anchored(model, base)
        probes = [max(1, b0 // 2), 8 * b0]
        if data.batch_collides and any(abs(model.predict(b) - hybrid.predict(b)) > AGREE * hybrid.predict(b)
                                       for b in probes):
            # The measured peak at b0 is exact, its split into fixed and scaled may not be (an
            # activation may have a parameter's shape). Where the replay (at a prime batch size,
            # unambiguous) moves differently with the batch, keep the measured peak at b0 and take
            # how it moves from the replay.
            model = hybrid
        if oom is None:
            if model is not hybrid:
                model.check, model.check_batch = hybrid, base.batch
            return model
        # The step that died is not the steps measured before it: what first appears in it (the
        # optimizer state a first step() makes, buffers built lazily) is in the replay of two steps,
        # and what it had reached is in the partial frontier. Its peak is the highest of them all.
        died = frontier([*model.points, *_replayed(base, b0, oom)])
        if died != model.points:
            model.points, model.source = died, "measured+replay"
        return model
    if base is not None:
        points.extend(_replayed(base, b0, oom))
        points.extend(partial)
        return BatchModel(b0=b0, points=frontier(points), source="replay")
    if partial:
        return BatchModel(b0=b0, points=frontier(points + partial), source="partial", lower_bound=True)
    return None
