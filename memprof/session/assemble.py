"""From what the collectors hold to a :class:`~memprof.model.report.Report`: the run data, the
doctor's findings and the advisor's recommendations, put together once at the end."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from memprof._version import __version__
from memprof.advise import advise
from memprof.collect.aside import run_aside
from memprof.collect.replay import ReplaySet, make_replays
from memprof.model.categories import CATEGORIES, PRE_LOOP
from memprof.model.report import (
    Breakdown,
    CudaStats,
    DeviceInfo,
    ModuleRecord,
    OomReport,
    Report,
    Status,
    StepRecord,
    StepsKept,
    TensorRecord,
)
from memprof.model.run import OomCapture, RunData
from memprof.session.quiet import kept_quiet

if TYPE_CHECKING:
    from memprof.session.core import Session


class Replays:
    """The advisor's replays of the training step on fake tensors (no memory), made while the model
    is alive: at the first detailed training step, or at the end when no step completed."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.made = False
        self.replays: ReplaySet | None = None

    def _make(self) -> None:
        s = self.session
        self.made = True
        stopped, s.stopped = s.stopped, True  # the session's hooks stand still meanwhile
        logged: list[str] = []
        try:
            with kept_quiet() as logged:  # torch's fake-tensor tracebacks: the report's, not stderr's
                calls, optimizers, modules = list(s.modules.last_inputs.values()), s.optimizers.live(), s.modules.records()
                self.replays = run_aside(lambda: make_replays(calls, optimizers, modules, sources=[s.config.script]))
        except Exception as e:
            s.warn(f"the advisor's replay failed: {e!r}"[:300])
        finally:
            s.stopped = stopped
        for error in self.replays.errors if self.replays is not None else []:
            if "replay" in error:  # a replay that raised (not "no model call was recorded")
                s.warn(f"the advisor's {error}")
        for line in logged:
            s.warn(f"during the advisor's replay: {line}")

    def make_once(self) -> None:
        if self.session.config.advise and not self.made:
            self._make()

    def get(self) -> ReplaySet | None:
        """The replays; made now if none were (an out-of-memory at the first step, or no training)
        and the model still lives (an exception's traceback keeps it)."""
        s = self.session
        if not self.made and s.config.advise and s.modules.last_inputs:
            self._make()
        return self.replays


def cuda_stats(session: Session) -> CudaStats | None:
    cuda = session.cuda
    if not cuda.steps:
        return None
    stats = CudaStats(**asdict(cuda.steps[-1]))
    try:  # what nvidia-smi sees: the advisor's CUDA context estimate
        free, total = cuda.backend.mem_get_info(cuda.index)
        stats.device_free_bytes, stats.device_total_bytes = int(free), int(total)
    except Exception:
        pass
    return stats


def run_data(session: Session) -> RunData:
    s = session
    tracker = s.tracker
    dev = s.cuda.device() if s.cuda.active else None
    steps = s.steps
    # CUDA: the allocator's peak; CPU: the tracker's, or the CPU counter's where watched steps went higher.
    peak = steps.run_peak_cuda if s.cuda.active and steps.run_peak_cuda else max(tracker.peak, steps.run_peak_cpu)
    return RunData(
        iterations=steps.iterations, peak_bytes=peak,
        breakdown_at_peak={c.value: tracker.peak_cat[i] for i, c in enumerate(CATEGORIES)},
        device_type="cuda" if s.cuda.active else "cpu", device_total_bytes=dev[1] if dev else None,
        budget_bytes=s.config.budget_bytes, memory_limit_bytes=s.config.memory_limit_bytes,
        optimizers=s.optimizers.infos(), modules=s.modules.records(), cuda=cuda_stats(s), oom=s.oom.capture,
        autocast_used=s.boundaries.autocast_used, batch_size=tracker.batch_size,
        pre_loop_peak=tracker.pre_loop_peak if tracker.step != PRE_LOOP else tracker.step_peak,
        calls=list(s.modules.last_inputs.values()), replays=s.replays.get(),
        batch_collides=bool(tracker.batch_size) and any(tracker.batch_size in shape for shape in tracker.fixed_shapes),
    )


def _oom_report(oom: OomCapture) -> tuple[OomReport, list[TensorRecord]]:
    post = OomReport(
        source=oom.source, requested_bytes=oom.requested_bytes, live_bytes=oom.live_bytes,
        limit_bytes=oom.limit_bytes, breakdown=oom.breakdown, by_module=oom.by_module, step=oom.step,
    )
    largest = [
        TensorRecord(bytes=t.bytes, shape=list(t.shape), dtype=t.dtype, category=t.category, module=t.module,
                     created_step=t.created_step, file=t.file, line=t.line)
        for t in oom.largest
    ]
    return post, largest


def _end_breakdown(categories: tuple[int, ...] | None, end: int) -> dict[str, int] | None:
    """A detailed step's end by category; what the categories miss of its end (a clamped end, memory
    the tracker did not see) is left out rather than guessed."""
    if categories is None or sum(categories) != end:
        return None
    return {c.value: int(n) for c, n in zip(CATEGORIES, categories, strict=True)}


def build_report(session: Session, status: Status, exc: BaseException | None, exit_code: int | None) -> Report:
    s = session
    data = run_data(s)
    dev = s.cuda.device() if s.cuda.active else None
    device = DeviceInfo(type=data.device_type, name=dev[0] if dev else "cpu", total_bytes=dev[1] if dev else None,
                        index=s.cuda.index if s.cuda.active else None)
    breakdown = Breakdown.from_mapping(data.breakdown_at_peak)
    if data.peak_bytes != breakdown.total:  # CUDA: the allocator's peak; rounding etc. is "other"
        breakdown.other += data.peak_bytes - breakdown.total
        breakdown.other = max(breakdown.other, 0)
    steps = [
        StepRecord(index=it.index, peak_bytes=it.peak_bytes, end_bytes=min(it.end_bytes, it.peak_bytes),
                   batch_size=it.batch_size, seconds=round(it.seconds, 6), phase=it.phase, detailed=it.detailed,
                   breakdown=_end_breakdown(it.end_categories, min(it.end_bytes, it.peak_bytes)))
        for it in data.iterations
    ]
    report = Report(
        script=s.config.script, argv=list(s.config.argv), status=status, device=device,
        peak_bytes=int(data.peak_bytes), steps=steps, breakdown_at_peak=breakdown, modules=module_records(s),
        exit_code=exit_code, duration_seconds=time.perf_counter() - s.started_at, memprof_version=__version__,
    )
    if exc is not None:
        report.error = f"{type(exc).__name__}: {exc}"[:2000]
    if s.cuda.active:
        report.cuda = data.cuda or CudaStats()
        report.cuda.history_recorded = s.cuda.history
    for e in s.cuda.errors:
        s.warn(e)
    with kept_quiet() as logged:  # memprof's own work: what it logs goes to the report
        _diagnose(s, report, data, status, exc)
    for line in logged:
        s.warn(f"while the report was made: {line}")
    if data.oom is not None:
        report.oom, report.largest_tensors = _oom_report(data.oom)
    history = s.steps.history
    if history.count > len(steps):  # a long run: its steps were downsampled
        report.steps_kept = StepsKept.from_dict(dict(history.summary()))
    report.warnings = list(s.warnings)
    return report


def _diagnose(s: Session, report: Report, data: RunData, status: Status, exc: BaseException | None) -> None:
    """The doctor's findings and the advisor's recommendations, each failure a warning."""
    try:
        report.findings = s.doctor.finish(data, status=status, exc=exc)
    except Exception as e:
        s.warn(f"the doctor failed: {e!r}", tb=True)
    if s.config.advise:
        try:
            advice = advise(data)
            report.recommendations = advice.recommendations
            report.advisor = advice.model
        except Exception as e:
            s.warn(f"the advisor failed: {e!r}", tb=True)


def module_records(session: Session) -> list[ModuleRecord]:
    """The modules, largest activations first."""
    return sorted(
        (ModuleRecord(name=m.name, type=m.type, parameter_bytes=m.parameter_bytes,
                      activation_bytes=m.activation_bytes, gradient_bytes=m.gradient_bytes, calls=m.calls)
         for m in session.modules.records()),
        key=lambda m: (-m.activation_bytes, -m.parameter_bytes, m.name),
    )


__all__ = ["Replays", "build_report", "module_records", "run_data"]
