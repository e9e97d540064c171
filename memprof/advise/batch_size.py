"""The largest batch size that fits a budget, and its predicted peak.

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
(:mod:`memprof.advise.replay`), plus what the run held outside the model (a data set, the
targets); what the failing step had already reached is a lower bound on top.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from memprof.advise.budget import Budget
from memprof.advise.replay import ReplaySet
from memprof.collect.timeline import IterationRecord, RunData, frontier
from memprof.report.model import Recommendation, RecommendationKind
from memprof.units import fmt_bytes

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

    def to_dict(self) -> dict[str, Any]:
        return {"reference_batch_size": self.b0, "source": self.source, "extra_bytes": self.extra,
                "lower_bound": self.lower_bound, "iterations": self.iterations,
                "points": [[f, s] for f, s in sorted(self.points)]}


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


def recommend(data: RunData, model: BatchModel, budget: Budget) -> Recommendation | None:
    current = (data.oom.batch_size if data.oom is not None and data.oom.batch_size else None) or model.b0
    b = model.largest(budget.bytes)
    if b is None:
        return None
    now = model.predict(current)
    where = budget.describe()
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
    peak = model.predict(b)
    f, s = model.point(b)
    per_sample = s / b if b else 0
    extra.update({"fixed_bytes": f, "per_sample_bytes": int(per_sample)})
    basis = (f"{fmt_bytes(f)} fixed + {fmt_bytes(per_sample)} per sample at the peak"
             + (", from a replay of the model (the run died before a full step)" if model.source == "replay" else "")
             + (", from the failed step alone: a lower bound, it may still not fit" if model.lower_bound else ""))
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
