"""A profiling session: the collectors' lifetime, and the wiring of the collaborators that do the work.

``memprof run`` is a session around ``runpy``; ``memprof.track()`` a session around a block;
``@memprof.profile`` a session around a call. The jobs are the collaborators':

- :mod:`~memprof.session.boundaries`: where iterations end, training or evaluation (the iteration model);
- :mod:`~memprof.session.steps`: each iteration's record (peak, end, frontier, census);
- :mod:`~memprof.session.schedule`: detail or watch, and which steps are sampled;
- :mod:`~memprof.session.optimizers`: the optimizers, and the categories of what they hold;
- :mod:`~memprof.session.lingering`: old storages alive at a peak;
- :mod:`~memprof.session.oom`: what held memory at an out-of-memory;
- :mod:`~memprof.session.assemble`: run data -> Report (with the doctor and the advisor);
- :mod:`~memprof.session.publish`: the live state for ``memprof monitor`` and ``--tui``.

Every hook catches its own errors: a memprof failure turns detail off and becomes a warning in
the report, never an exception in the user's code.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import ModuleType
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from memprof.analyze import Doctor
from memprof.collect import ophook
from memprof.collect.autograd import BackwardHook
from memprof.collect.census import live_objects, live_tensors, reachable_tensors
from memprof.collect.cpu_counter import CpuCounter
from memprof.collect.cuda import CudaBackend, CudaCollector
from memprof.collect.graphs import ForwardTracker
from memprof.collect.modules import ModuleCollector, RootCall
from memprof.collect.native import NativeTracker
from memprof.collect.sites import main_thread_frame
from memprof.collect.storage import StorageTracker
from memprof.model.categories import PARAMETERS, PRE_LOOP
from memprof.model.progress import Progress
from memprof.model.report import Report, Status
from memprof.model.run import ForwardRecord
from memprof.session.assemble import Replays, build_report
from memprof.session.boundaries import Boundaries
from memprof.session.config import LINGER_MIN_SHARE, SessionConfig
from memprof.session.lingering import Lingering
from memprof.session.no_grad import NoGradProbe
from memprof.session.oom import OomWatch
from memprof.session.optimizers import Optimizers
from memprof.session.publish import Publisher
from memprof.session.schedule import Schedule
from memprof.session.steps import Steps


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Session:
    def __init__(self, config: SessionConfig | None = None, cuda_backend: CudaBackend | None = None) -> None:
        self.config = config or SessionConfig()
        self.tracker: StorageTracker | NativeTracker = StorageTracker()  # NativeTracker from start(), where built
        self.boundaries = Boundaries(self)
        self.modules = ModuleCollector(self.tracker, self.boundaries.on_model_call, self._on_model_output)
        self.forwards = ForwardTracker(self._on_forward_dead, self._on_forward_backward)
        # Not through guard(): the hook catches its callbacks' errors itself (told at stop), and
        # this runs at every backward pass.
        self.backward_hook = BackwardHook(self.boundaries.on_backward_start, self.boundaries.on_backward_end)
        self.cuda = CudaCollector(backend=cuda_backend) if cuda_backend is not None else CudaCollector()
        self.cpu_counter = CpuCounter()  # started with the op hook, where it is built (CPU runs)
        self.doctor = Doctor()
        self.doctor.tracker_refs = self.tracker.live_refs
        self.steps = Steps(self)
        self.schedule = Schedule(self)
        self.optimizers = Optimizers(self)
        self.lingering = Lingering(self)
        self.oom = OomWatch(self)
        self.replays = Replays(self)
        self.no_grad = NoGradProbe(self)
        self.publisher = Publisher(self)
        self.warnings: list[str] = []
        self.report: Report | None = None
        self.started = False
        self.stopped = False
        self.detail = False
        self.started_at = 0.0
        self.live_after_call = 0  # live bytes after the last model call (an evaluation's end)
        self.lock = threading.RLock()
        self._root_saved: dict[int, int] = {}  # id(model) -> bytes its forward saved, last measured
        self._handles: list[Any] = []
        self._next_heap_scan: float | None = None  # None: the session's start scanned the heap

    @property
    def iterations(self) -> list[Any]:
        return self.steps.iterations

    @property
    def peak_so_far(self) -> int:
        """The run's peak until now: the tracker's, or where higher the CUDA allocator's, or the CPU
        counter's for watched steps."""
        return max(int(self.tracker.peak), int(self.steps.run_peak_cuda or 0), self.steps.run_peak_cpu)

    def progress(self) -> Progress:
        """How the run stands now: its steps, its peak so far and the findings so far (cheap: no
        analysis runs; the report at the end has the rest)."""
        with self.lock:
            return Progress(steps=self.steps.count, peak_bytes=self.peak_so_far,
                            budget_bytes=self.config.budget_bytes, findings=list(self.doctor.findings))

    def steps_peak(self, since: int = 0) -> int:
        """The highest peak among the steps from step ``since`` on (of the last 512 kept whole; 0:
        none yet): an epoch's peak, where :meth:`progress` has the run's so far."""
        return max((peak for _, _, peak in self.steps.history.recent(since)), default=0)

    # -- lifetime ------------------------------------------------------------------------------
    def start(self) -> Session:
        if self.started:
            return self
        self.started = True
        self.started_at = time.perf_counter()
        self.steps.start()
        cfg = self.config
        try:
            on_cuda = self.cuda.start(record_history=cfg.record_cuda_history)
            if cfg.memory_limit_bytes is not None:
                if on_cuda:
                    self.cuda.cap(cfg.memory_limit_bytes)
                else:
                    self.tracker.limit = cfg.memory_limit_bytes
                    self.tracker.limit_device = "CPU"
        except Exception as e:
            self.warn(f"CUDA collector disabled: {e}")
        self._handles.append(register_optimizer_step_pre_hook(self.guard(self.boundaries.before_optimizer_step)))
        self._handles.append(register_optimizer_step_post_hook(self.guard(self.boundaries.after_optimizer_step)))
        hook = self._choose_tracker()
        if hook is not None and not self.cuda.active:
            self._start_cpu_counter(hook)
        self.tracker.peak_watch = self.lingering.on_peak
        self.tracker.peak_watch_share = LINGER_MIN_SHARE  # below it the watch names nothing: not called
        self.tracker.on_over_limit = lambda n: self.oom.on_oom(n, "memory-limit")
        self.cuda.on_oom = lambda ev: self.oom.on_oom(ev.requested_bytes, "cuda")
        self._adopt_existing()
        try:
            self.backward_hook.install()
        except Exception as e:
            self.warn(f"backward passes not followed: {e!r}")
        self.set_detail(True)
        if cfg.publish:
            self.publisher.start()
        return self

    def _choose_tracker(self) -> ModuleType | None:
        """The C++ ledger where the op hook is built (``--detail full`` builds it), else Python's.
        ``--memory-limit`` on CPU raises inside ops: only the Python tracker, a dispatch mode, can
        (detail then stays on: no CPU counter is needed). Returns the op hook, where loaded."""
        if self.tracker.limit is not None:
            return None
        hook = ophook.load(build=self.config.detail == "full", log=_stderr_line)
        if hook is None:
            if self.config.detail == "full" and ophook.failure():
                self.warn(f"C++ op hook unavailable, detail runs in Python (slower): {ophook.failure()}")
            return None
        try:
            self.tracker = NativeTracker(hook)
        except Exception as e:  # an op hook built from an older source: Python's tracker does the job
            self.warn(f"C++ op hook unusable, detail runs in Python (slower): {e!r}")
            return None
        self.modules.tracker = self.tracker
        self.doctor.tracker_refs = self.tracker.live_refs
        return hook

    def _start_cpu_counter(self, hook: ModuleType) -> None:
        """Watch mode's running peak on CPU: the op hook's allocator counter."""
        try:
            self.cpu_counter = CpuCounter(hook)
            self.cpu_counter.start()
        except Exception as e:
            self.warn(f"CPU allocator counter unavailable: {e!r}")

    def _adopt_existing(self) -> None:
        """Count what exists before the session (``track()`` inside a program) as pre-loop memory."""
        try:
            for t in live_tensors():
                self.tracker.ensure(t, step=PRE_LOOP)
            for obj in live_objects(torch.nn.Module):
                for p in obj.parameters():
                    self.tracker.set_category(p, PARAMETERS)
        except Exception as e:
            self.warn(f"census of existing tensors failed: {e}")

    def stop(self, status: Status = Status.OK, exc: BaseException | None = None, exit_code: int | None = None) -> Report:
        """Stop every hook and build the report. Safe to call more than once."""
        if self.report is not None:
            return self.report
        self.stopped = True
        try:
            self.boundaries.finish()
            self.steps.finish()  # the run's peak takes in what watching did not count
            # Forward passes still pending at the end without backward: their graphs are dropped now.
            self.doctor.finish_forwards([r for r in self.forwards.pending() if not r.backpropagated],
                                        self.steps.index)
        except Exception as e:
            self.warn(f"last iteration not recorded: {e}")
        self.backward_hook.remove()
        if self.backward_hook.errors:
            self.warn(f"internal error around a backward pass: {self.backward_hook.last_error!r}")
        self.set_detail(False)
        for h in self._handles:
            try:
                h.remove()
            except Exception:
                pass
        self._handles = []
        self.modules.close()
        self.forwards.enabled = False
        self.cuda.stop()
        self.cpu_counter.stop()
        self.tracker.peak_watch = None
        self.report = build_report(self, status, exc, exit_code)
        self.publisher.publish(final=True)
        self.publisher.close()
        return self.report

    def __enter__(self) -> Session:
        return self.start()

    def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
        if ev is None:
            status = Status.OK
        elif isinstance(ev, torch.OutOfMemoryError):
            status = Status.OOM
        elif isinstance(ev, KeyboardInterrupt):
            status = Status.INTERRUPTED
        else:
            status = Status.ERROR
        self.stop(status, ev)

    # -- detail on/off ---------------------------------------------------------------------------
    def set_detail(self, on: bool) -> None:
        if on == self.detail:
            return
        try:
            if on:
                if self.steps.count:  # back from watch mode: count what was made meanwhile
                    self._catch_up()
                self.tracker.start()
                self.modules.enable_detail()
            else:
                self.modules.disable_detail()
                self.tracker.stop()
            self.detail = on
        except Exception as e:
            self.warn(f"could not switch detail {'on' if on else 'off'}: {e}")
            self.detail = False

    def _catch_up(self) -> None:
        """Count the storages made while watching that are still alive.

        Look where a training loop keeps its memory: the user's frames and their objects, with
        what their autograd graphs saved; the models (parameters, buffers, gradients); the
        optimizers (state, gradients). A heap scan finds every other tensor object but costs
        milliseconds per 100k Python objects (15-40 ms in a training script): it runs too only
        where that keeps heap scans under 1% of the run's time.
        """
        from memprof.collect import census as census_mod

        tracker = self.tracker
        for t in reachable_tensors(main_thread_frame()):
            tracker.ensure(t)
        for m in list(self.modules.modules.values()):
            for p in m._parameters.values():
                if p is not None:
                    tracker.ensure(p)
                    if p.grad is not None:
                        tracker.ensure(p.grad)
            for b in m._buffers.values():
                if b is not None:
                    tracker.ensure(b)
        now = time.perf_counter()
        next_scan = self._next_heap_scan
        if next_scan is None:
            next_scan = self.started_at + 100 * census_mod.last_scan_seconds
        if now >= next_scan:
            for t in live_tensors():
                tracker.ensure(t)
            done = time.perf_counter()
            next_scan = done + 100 * (done - now)
        self._next_heap_scan = next_scan
        self.optimizers.categorise_all()

    # -- errors ----------------------------------------------------------------------------------
    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as a hook: memprof's own errors become a warning and turn detail off."""

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.stopped:
                return None
            try:
                return fn(*args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:
                self.warn(f"internal error in {fn.__name__}: {e!r}; detail turned off", tb=True)
                self.set_detail(False)
                self.config.detail = "off"
            return None

        return guarded

    def warn(self, message: str, tb: bool = False) -> None:
        if tb and os.environ.get("MEMPROF_DEBUG"):
            traceback.print_exc()
        if message not in self.warnings:
            self.warnings.append(message)

    # -- model outputs and their graphs ----------------------------------------------------------
    def _on_model_output(self, call: RootCall, output: Any) -> None:
        if self.stopped or not call.grad_enabled:
            return
        try:
            steps = self.steps
            record = ForwardRecord(module=call.name, site=call.site, step=steps.index, phase=steps.phase)
            if self.detail:
                key = id(call.module)
                if self.modules.packing:
                    saved = self.no_grad.per_call(key, steps.index, self.tracker.saved_bytes_of(key))
                    record.saved_bytes = self._root_saved[key] = saved
                else:  # between sampled steps: what this model's forward saved on the last sampled one
                    record.saved_bytes = self._root_saved.get(key, 0)
            if self.forwards.watch(output, record):
                self.no_grad.on_watched(call, record)
                self.boundaries.on_graph_watched(call, record)
            self.live_after_call = self.tracker.live
        except Exception as e:
            self.warn(f"internal error after a model call: {e!r}", tb=True)

    def _on_forward_backward(self, record: ForwardRecord) -> None:
        self.no_grad.on_backward(record)
        self.boundaries.on_graph_backward(record)

    def _on_forward_dead(self, record: ForwardRecord) -> None:
        self.no_grad.on_dead(record)
        self.boundaries.on_graph_dead(record)
        if not record.backpropagated and not self.stopped:
            with self.lock:
                self.doctor.forward_dropped(record, self.steps.index)
