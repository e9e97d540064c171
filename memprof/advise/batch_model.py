"""The batch model: the peak at any batch size, from what the run measured (or a replay).

The batch model is measured, not assumed. The storage tracker marks every storage whose shape
follows the batch (``scaled``) and records ``(live, scaled live)`` at every local maximum of live
memory in each detailed iteration; each iteration keeps the points that can hold its peak at some
batch size (its frontier). At batch ``b`` a point becomes ``fixed + scaled * b / b0``, and the peak
is the largest point: parameters, gradients and optimizer state stay (the first step's optimizer
state creation included: its points are in iteration 0's frontier), activations scale, and the
point that holds the peak may change with ``b`` (an optimizer step at small batches, the backward
pass at large ones).

When the run died before completing an iteration (an out-of-memory at the first step), the
frontier of the step comes from a replay of the model on fake tensors
(:mod:`memprof.collect.replay`), plus what the run held outside the model (a data set, the
targets); what the failing step had already reached is a lower bound on top.

The batch model is a shared input of the advisors (:class:`memprof.advise.advisor.Inputs`): the
batch size's, the optimizer's, mixed precision's and gradient checkpointing's predictions start
from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from memprof.collect.replay import ReplaySet
from memprof.model.report import BatchFigures
from memprof.model.run import IterationRecord, RunData, frontier

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


def _usable(it: IterationRecord, b0: int, failed_step: int | None) -> bool:
    if not it.detailed or not it.frontier or it.batch_size != b0:
        return False
    return failed_step is None or it.index < failed_step


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
        measured = BatchModel(b0=b0, points=frontier(points), source="measured", extra=extra,
                              iterations=[it.index for it in its])
        if data.batch_collides and base is not None:
            # The measured peak at b0 is exact, its split into fixed and scaled may not be (an
            # activation may have a parameter's shape). Where the replay (at a prime batch size,
            # unambiguous) moves differently with the batch, keep the measured peak at b0 and take
            # how it moves from the replay.
            shift = measured.predict(b0) - extra - base.predict(b0)
            hybrid = BatchModel(b0=b0, points=frontier([(f + shift, int(s * b0 / base.batch)) for f, s in base.frontier]),
                                source="measured+replay", extra=extra, iterations=measured.iterations)
            probes = [max(1, b0 // 2), 8 * b0]
            if any(abs(measured.predict(b) - hybrid.predict(b)) > AGREE * hybrid.predict(b) for b in probes):
                return hybrid
        return measured
    if base is not None:
        outside_fixed = oom.pre_loop_fixed_bytes if oom is not None else 0
        inputs_b0 = base.input_bytes * b0 / base.batch
        outside_scaled = max((oom.pre_loop_scaled_bytes if oom is not None else 0) - inputs_b0, 0)
        for f, s in base.frontier:
            points.append((f + outside_fixed, int(s * b0 / base.batch + outside_scaled)))
        points.extend(partial)
        return BatchModel(b0=b0, points=frontier(points), source="replay")
    if partial:
        return BatchModel(b0=b0, points=frontier(points + partial), source="partial", lower_bound=True)
    return None
