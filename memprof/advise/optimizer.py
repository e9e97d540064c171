"""Optimizer state: its share of the peak, and what a leaner optimizer would save.

State is fixed memory: made at the first step, kept for the run, the same at any batch size. Its
size per parameter byte is known per optimizer (Adam: two float32 moments, SGD with momentum:
one). The prediction takes the state saved off every point of every iteration that already had
it (all iterations after the first step), so the peak may move to another point.
"""

from __future__ import annotations

from typing import Any

from memprof.advise.advisor import Inputs
from memprof.advise.batch_model import BatchModel
from memprof.model import Recommendation, RecommendationKind
from memprof.model.report import AdvisorModel
from memprof.model.run import OptimizerInfo, RunData
from memprof.units import fmt_bytes

MIN_SAVING_SHARE = 0.05
LBFGS_HISTORY = 10  # the history an LBFGS is advised to keep at most

# float32 state tensors per parameter (before the first step, to estimate what it will make)
_SLOTS = {"Adam": 2, "AdamW": 2, "NAdam": 2, "RAdam": 2, "Adamax": 2, "Adadelta": 2, "SparseAdam": 2,
          "Rprop": 2, "Adagrad": 1, "ASGD": 1, "Adafactor": 0}


def state_slots(info: OptimizerInfo) -> float:
    """How many parameter-sized float32 tensors of state this optimizer keeps."""
    o = info.options
    if info.type == "SGD":
        return 1.0 if o.get("momentum") else 0.0
    if info.type == "RMSprop":
        return 1.0 + bool(o.get("momentum")) + bool(o.get("centered"))
    slots = _SLOTS.get(info.type)
    if slots is None:
        return 2.0
    return slots + (1 if o.get("amsgrad") else 0)


def expected_state_bytes(info: OptimizerInfo) -> int:
    return info.state_bytes or int(state_slots(info) * info.param_bytes)


def alternatives(info: OptimizerInfo, state: int) -> list[tuple[str, int]]:
    """(what to use, bytes of state it saves): the closest to the current optimizer first."""
    out: list[tuple[str, int]] = []
    slots = state_slots(info)
    if info.type in ("Adam", "AdamW", "NAdam", "RAdam", "Adamax") and slots >= 2:
        out.append(("an 8-bit AdamW (bitsandbytes.optim.AdamW8bit: 2 bytes of state per parameter instead of "
                    f"{int(slots * 4)})", int(state * (1 - 2 / (slots * 4)))))
        out.append(("torch.optim.Adafactor (factored second moment, no first moment: state of about a row "
                    "and a column per weight matrix)", int(state * 0.97)))
        out.append(("SGD with momentum (one state tensor instead of two)", int(state * (1 - 1 / slots))))
    elif info.type == "SGD" and slots:
        out.append(("SGD without momentum (no state)", state))
    elif info.type == "RMSprop" and slots > 1:
        out.append(("RMSprop without momentum or centering (one state tensor)", int(state * (1 - 1 / slots))))
    elif info.type == "LBFGS" and info.param_bytes:
        # Its history: two flat copies of the parameters per entry (old_dirs, old_stps), beside
        # the direction and the last gradient.
        entries = max(0, (state // info.param_bytes - 2) // 2)
        if entries > LBFGS_HISTORY:
            out.append((f"LBFGS with history_size={LBFGS_HISTORY} (it keeps {entries} pairs of flat parameter "
                        "copies now)", (entries - LBFGS_HISTORY) * 2 * info.param_bytes))
    return out


def _predict_without(data: RunData, model: BatchModel, saving: int) -> int:
    """The peak at the reference batch size with ``saving`` bytes of state fewer after the first step."""
    failed = data.oom.step if data.oom is not None else None
    its = [it for it in data.iterations if it.index in model.iterations and (failed is None or it.index < failed)]
    if not its:
        return max(model.predict(model.b0) - saving, 0)
    first = min(it.index for it in its if it.phase == "train") if any(it.phase == "train" for it in its) else -1
    best = data.pre_loop_peak
    for it in its:
        cut = saving if it.index > first else 0
        for f, s in it.frontier:
            best = max(best, f - cut + s)
    return best + model.extra


class Optimizer:
    name = "optimizer"

    def advise(self, inputs: Inputs, out: AdvisorModel) -> list[Recommendation]:
        recs, figures = recommend(inputs.data, inputs.batch)
        if figures:
            out.figures[self.name] = figures
        return recs


def labels(infos: list[OptimizerInfo]) -> list[str]:
    """One key per optimizer: its type, numbered where the run has several of one type
    (a GAN's two Adams: "Adam #1", "Adam #2")."""
    counts: dict[str, int] = {}
    for info in infos:
        counts[info.type] = counts.get(info.type, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for info in infos:
        seen[info.type] = seen.get(info.type, 0) + 1
        out.append(f"{info.type} #{seen[info.type]}" if counts[info.type] > 1 else info.type)
    return out


def own_share_at_peak(infos: list[OptimizerInfo], at_peak: int) -> list[int]:
    """Each optimizer's part of the optimizer state at the peak: the peak's state split in
    proportion to each one's own (one optimizer: all of it)."""
    states = [info.state_bytes for info in infos]
    total = sum(states)
    if len(infos) == 1:
        return [at_peak]
    if total <= 0:
        return [0 for _ in infos]
    return [at_peak * n // total for n in states]


def recommend(data: RunData, model: BatchModel | None) -> tuple[list[Recommendation], dict[str, Any]]:
    figures: dict[str, Any] = {}
    recs: list[Recommendation] = []
    peak = data.peak_bytes or 1
    infos = list(data.optimizers)
    owns = own_share_at_peak(infos, int(data.breakdown_at_peak.get("optimizer_state", 0)))
    for info, label, at_peak in zip(infos, labels(infos), owns, strict=True):
        state = expected_state_bytes(info)
        figures[label] = {"state_bytes": info.state_bytes, "expected_state_bytes": state,
                          "param_bytes": info.param_bytes, "state_at_peak_bytes": at_peak,
                          "share_of_peak": round(at_peak / peak, 4)}
        options = alternatives(info, state)
        if not options or state < MIN_SAVING_SHARE * peak:
            continue
        what, saving = options[0]
        if model is not None and not model.lower_bound and info.state_bytes:
            measured = model.predict(model.b0)
            predicted = _predict_without(data, model, saving)
        else:  # died before the first step made the state: it would have been on top of the peak
            measured = model.predict(model.b0) if model is not None else peak
            predicted = max(measured - saving, 0)
        if measured - predicted < MIN_SAVING_SHARE * measured:
            continue
        others = "; ".join(f"{w.split(' (')[0]}: {fmt_bytes(-s, signed=True)}" for w, s in options[1:])
        share = f"{at_peak / peak:.0%} of the peak" if at_peak else "made at the first step"
        recs.append(Recommendation(
            kind=RecommendationKind.OPTIMIZER, current=info.type, suggested=what.split(" (")[0],
            predicted_peak_bytes=predicted,
            message=(f"{label} keeps {fmt_bytes(state)} of optimizer state ({state / max(info.param_bytes, 1):.1f}x "
                     f"the parameters, {share}); {what} saves {fmt_bytes(saving)}: predicted peak "
                     f"{fmt_bytes(predicted)}" + (f" (also: {others})" if others else "")),
            extra={**({"optimizer": label} if label != info.type else {}),  # which one, where several share a type
                   "state_bytes": state, "saving_bytes": saving,
                   "alternatives": [{"optimizer": w, "saving_bytes": s} for w, s in options]},
        ))
    return recs, figures
