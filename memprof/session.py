"""A profiling session: owns the collectors' lifetime, decides when to look closely, builds the report.

``memprof run`` is a session around ``runpy``; ``memprof.track()`` a session around a block;
``@memprof.profile`` a session around a call.

Detail is costly, watching is cheap. The first ``detail_steps`` iterations run in full detail
(every op counted, every module call hooked, a census of the user's variables at each boundary).
Then the session watches: only the optimizer step hooks and the root modules' own hooks stay on,
and each boundary reads one counter (the CUDA allocator's, or the C heap's bytes in use on
CPU). Detail comes back for a few iterations when that counter grows past what detail measured,
when the run switches between training and evaluation, and periodically, with a backoff.

Every hook catches its own errors: a memprof failure turns detail off and becomes a warning in
the report, never an exception in the user's code.
"""

from __future__ import annotations

import collections
import math
import os
import sys
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from memprof._version import __version__
from memprof.collect import ophook
from memprof.collect.census import census, live_objects, live_tensors, names_of_storages
from memprof.collect.cuda import CudaBackend, CudaCollector
from memprof.collect.graphs import ForwardRecord, ForwardTracker
from memprof.collect.modules import ModuleCollector, RootCall, batch_size_of, call_site
from memprof.collect.native import NativeTracker, StorageInfo
from memprof.collect.sites import main_thread_frame, user_frame
from memprof.collect.storage import (
    ACTIVATIONS,
    GRADIENTS,
    OPTIMIZER_STATE,
    OTHER,
    PARAMETERS,
    PRE_LOOP,
    StorageRef,
    StorageTracker,
    heap_in_use_bytes,
)
from memprof.collect.timeline import (
    IterationRecord,
    LingeringCandidate,
    OomCapture,
    OptimizerInfo,
    RunData,
    TensorInfo,
    frontier_from_live,
)
from memprof.report.model import (
    CATEGORIES,
    Breakdown,
    DeviceInfo,
    Finding,
    ModuleRecord,
    Report,
    Status,
    StepRecord,
)

# Resident memory (CPU) and the allocator (CUDA) rise only past their high-water mark: a rise of this
# much means live memory beyond anything detail measured, so detail comes back.
WATCH_MARGIN_BYTES = 256 * 1024
LINGER_MIN_SHARE = 0.04  # old storages below this share of live memory are not worth naming
FULL_DETAIL_PERIOD = 16  # --detail full: the census and other slow looks every this many iterations
PHASE_SAMPLED_STEPS = 3  # --detail full: iterations sampled after a change of phase
CENSUS_SHARE = 0.01  # --detail full: sampled censuses rarer where each would cost more of a step than this


@dataclass
class SessionConfig:
    script: str = "<track>"
    argv: list[str] = field(default_factory=list)
    detail: str = "auto"  # "auto": detail, then watch; "full": detail on every iteration
    detail_steps: int = 10
    budget_bytes: int | None = None
    memory_limit_bytes: int | None = None
    record_cuda_history: bool = True
    publish: bool = True  # the live channel for `memprof monitor` and `--tui`
    report_path: str | None = None  # where the JSON report will be written, shown by the UIs
    advise: bool = True


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Session:
    def __init__(self, config: SessionConfig | None = None, cuda_backend: CudaBackend | None = None) -> None:
        self.config = config or SessionConfig()
        self.tracker: StorageTracker | NativeTracker = StorageTracker()  # NativeTracker from start(), where built
        self.modules = ModuleCollector(self.tracker, self._on_root_call, self._on_root_output)
        self.forwards = ForwardTracker(self._on_forward_dead, self._on_forward_backward)
        self.cuda = CudaCollector(backend=cuda_backend) if cuda_backend is not None else CudaCollector()
        from memprof.analyze import Doctor

        self.doctor = Doctor()
        self.doctor.tracker_refs = self.tracker.live_refs
        self.iterations: list[IterationRecord] = []
        self.warnings: list[str] = []
        self.report: Report | None = None
        self.started = False
        self.stopped = False
        self.detail = False
        self.index = 0
        self.phase = "train"
        self._t0 = 0.0
        self._iter_t0 = 0.0
        self._iter_batch: int | None = None
        self._iter_detailed = False
        self._in_loop = False
        self._step_since_root = True
        # Each model called since the last optimizer step -> (backwards seen at its call, call site).
        self._called_since_step: dict[int, tuple[int, tuple[int, int] | None]] = {}
        self._last_call_grad = True  # whether the last model call ran with autograd on
        self._last_call_mode: tuple[bool, bool] | None = None  # (autograd on, module.training) of the last
        self._backwards = 0
        self._root_calls = 0
        self._opt_in_iteration = False  # an optimizer (any) stepped in the open iteration
        self._last_diagnosed: IterationRecord | None = None  # the last iteration with a census
        self._sample_until = 0  # --detail full: iterations before this index are sampled (a new phase)
        self._next_census = 0  # --detail full: the index from which a census is due again (_census_sampled)
        self._last_kept: weakref.ref[torch.optim.Optimizer] | None = None  # _keep_optimizer's last
        self._opt_tensors: dict[int, list[int]] = {}  # id(optimizer) -> ids of its parameters and state
        self._live_after_call = 0
        self._root_saved: dict[int, int] = {}  # id(model) -> bytes its forward saved, last measured
        self._next_check = 0.0
        self._primary_opt: int | None = None
        self._optimizers: weakref.WeakValueDictionary[int, torch.optim.Optimizer] = weakref.WeakValueDictionary()
        self._handles: list[Any] = []
        self._rearm = 0
        self._watch_period = 16
        self._watched_since_detail = 0
        self._counter_high = 0
        self._lingering: dict[int, LingeringCandidate] = {}
        self._prev_lingering: list[LingeringCandidate] = []
        self._oom: OomCapture | None = None
        self._last_detailed: IterationRecord | None = None
        self._last_points: list[tuple[int, int]] = []  # the last detailed step's (live, scaled) points...
        self._last_frontier: list[tuple[int, int]] = []  # ...and their frontier
        self._run_peak_cuda = 0
        self._autocast_used = False
        self._publisher: Any = None
        self._published_upto = 0
        self._published_t = 0.0
        self._samples: collections.deque[Any] = collections.deque(maxlen=300)
        self._last_publish = 0.0
        self._lock = threading.RLock()

    # -- lifetime ------------------------------------------------------------------------------
    def start(self) -> Session:
        if self.started:
            return self
        self.started = True
        self._t0 = self._iter_t0 = time.perf_counter()
        self._wall0 = time.time()
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
            self._warn(f"CUDA collector disabled: {e}")
        self._handles.append(register_optimizer_step_pre_hook(self._guard(self._on_opt_pre)))
        self._handles.append(register_optimizer_step_post_hook(self._guard(self._on_opt_post)))
        self._choose_tracker()
        self.tracker.peak_watch = self._on_peak_watch
        self.tracker.peak_watch_share = LINGER_MIN_SHARE  # below it _on_peak_watch names nothing: not called
        self.tracker.on_over_limit = lambda n: self.capture_oom(n, "memory-limit")
        self.cuda.on_oom = lambda ev: self.capture_oom(ev.requested_bytes, "cuda")
        self._adopt_existing()
        self._set_detail(True)
        if cfg.publish:
            self._start_publisher()
        return self

    def _choose_tracker(self) -> None:
        """The C++ ledger where the op hook is built (``--detail full`` builds it), else Python's.
        ``--memory-limit`` on CPU raises inside ops: only the Python tracker, a dispatch mode, can."""
        if self.tracker.limit is not None:
            return
        hook = ophook.load(build=self.config.detail == "full", log=_stderr_line)
        if hook is None:
            if self.config.detail == "full" and ophook.failure():
                self._warn(f"C++ op hook unavailable, detail runs in Python (slower): {ophook.failure()}")
            return
        try:
            self.tracker = NativeTracker(hook)
        except Exception as e:  # an op hook built from an older source: Python's tracker does the job
            self._warn(f"C++ op hook unusable, detail runs in Python (slower): {e!r}")
            return
        self.modules.tracker = self.tracker
        self.doctor.tracker_refs = self.tracker.live_refs

    def _adopt_existing(self) -> None:
        """Count what exists before the session (``track()`` inside a program) as pre-loop memory."""
        if sys.getrefcount is None:  # pragma: no cover
            return
        try:
            for t in live_tensors():
                self.tracker.ensure(t, step=PRE_LOOP)
            for obj in _live_modules():
                for p in obj.parameters():
                    self.tracker.set_category(p, PARAMETERS)
        except Exception as e:
            self._warn(f"census of existing tensors failed: {e}")

    def stop(self, status: Status = Status.OK, exc: BaseException | None = None, exit_code: int | None = None) -> Report:
        """Stop every hook and build the report. Safe to call more than once."""
        if self.report is not None:
            return self.report
        self.stopped = True
        try:
            self._finish_iteration_if_open()
        except Exception as e:
            self._warn(f"last iteration not recorded: {e}")
        self._set_detail(False)
        for h in self._handles:
            try:
                h.remove()
            except Exception:
                pass
        self._handles = []
        self.modules.close()
        self.forwards.enabled = False
        self.cuda.stop()
        self.tracker.peak_watch = None
        report = self._build_report(status, exc, exit_code)
        self.report = report
        self._publish(final=True)
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception:
                pass
        return report

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
    def _set_detail(self, on: bool) -> None:
        if on == self.detail:
            return
        try:
            if on:
                if self.iterations:  # back from watch mode: count what was made meanwhile
                    self._catch_up_census()
                self.tracker.start()
                self.modules.enable_detail()
            else:
                self.modules.disable_detail()
                self.tracker.stop()
            self.detail = on
        except Exception as e:
            self._warn(f"could not switch detail {'on' if on else 'off'}: {e}")
            self.detail = False

    def _catch_up_census(self) -> None:
        """Count the storages made while watching that are still alive.

        Look where a training loop keeps its memory: the user's frames and their objects, with
        what their autograd graphs saved; the models (parameters, buffers, gradients); the
        optimizers (state, gradients). A heap scan finds every other tensor object but costs
        milliseconds per 100k Python objects (15-40 ms in a training script): it runs too only
        where that keeps heap scans under 1% of the run's time.
        """
        from memprof.collect import census as census_mod

        tracker = self.tracker
        for t in census_mod.reachable_tensors(main_thread_frame()):
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
        next_scan = getattr(self, "_next_heap_scan", None)
        if next_scan is None:  # the session's start scanned the heap (_adopt_existing)
            next_scan = self._t0 + 100 * census_mod.last_scan_seconds
        if now >= next_scan:
            for t in live_tensors():
                tracker.ensure(t)
            done = time.perf_counter()
            next_scan = done + 100 * (done - now)
        self._next_heap_scan = next_scan
        self._categorise_optimizers()

    def _guard(self, fn: Any) -> Any:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.stopped:
                return None
            try:
                return fn(*args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except Exception as e:
                self._warn(f"internal error in {fn.__name__}: {e!r}; detail turned off", tb=True)
                self._set_detail(False)
                self.config.detail = "off"
            return None

        return guarded

    def _warn(self, message: str, tb: bool = False) -> None:
        if tb and os.environ.get("MEMPROF_DEBUG"):
            traceback.print_exc()
        if message not in self.warnings:
            self.warnings.append(message)

    # -- hooks -----------------------------------------------------------------------------------
    def _on_opt_pre(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self.detail:
            self._keep_optimizer(opt)
            self.tracker.set_categories([p.grad for group in opt.param_groups for p in group["params"]], GRADIENTS)
            if self._sampled_step():  # each module's largest gradient bytes: a maximum, sampled
                self.modules.record_gradients()

    def _keep_optimizer(self, opt: torch.optim.Optimizer) -> None:
        last = self._last_kept
        if last is not None and last() is opt:  # the common case: the optimizer of the last step
            return
        if self._optimizers.get(id(opt)) is not opt:  # a weak dictionary: setting it at each step costs
            self._optimizers[id(opt)] = opt
        self._last_kept = weakref.ref(opt)

    def _on_opt_post(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._opt_in_iteration = True
        if self._primary_opt is None:
            self._primary_opt = id(opt)
        if self.detail:
            self._keep_optimizer(opt)
            self._categorise_optimizer(opt)
        if id(opt) != self._primary_opt:
            return
        self._step_since_root = True
        self._called_since_step = {}
        if not self.detail and not self._iter_detailed:
            self._watch_boundary("train")
        else:
            self._end_iteration("train", sys._getframe(1))

    def _watch_boundary(self, phase: str) -> None:
        """A boundary in watch mode: one record and one look at the counter, at every step when steps
        take 2 ms or more (the look costs ~15 us), else every 50 ms."""
        now = time.perf_counter()
        last = self._last_detailed
        seconds = now - self._iter_t0
        self.iterations.append(IterationRecord(
            index=self.index, phase=phase, detailed=False,
            peak_bytes=last.peak_bytes if last else 0, end_bytes=last.end_bytes if last else 0,
            batch_size=self._iter_batch, seconds=seconds,
        ))
        if seconds >= 0.002:
            self._next_check = now
        self.index += 1
        self.forwards.step = self.index
        self._iter_t0 = now
        self._iter_batch = None
        self._opt_in_iteration = False
        if now >= self._next_check:
            self._next_check = now + 0.05
            if self.cuda.active:  # exact figures for watched steps on CUDA, at the check's pace
                c = self.cuda.on_step()
                if c is not None:
                    rec = self.iterations[-1]
                    rec.peak_bytes, rec.end_bytes = c.allocated_peak_bytes, c.allocated_bytes
                    self._run_peak_cuda = max(self._run_peak_cuda, c.allocated_peak_bytes)
                    self.cuda.backend.reset_peak(self.cuda.index)
            self._schedule(phase)
            if self.detail:
                self._begin_iteration(self.index)
            self.phase = phase
            if now - self._last_publish > 0.1:
                self._publish()

    def _sampled_step(self) -> bool:
        """Where ``--detail full`` looks at what rarely changes (the full-detail steps of the
        default mode always do): its first ``detail_steps`` iterations, then every 16th, and the
        first iterations of a new phase (training, evaluation)."""
        i = self.index
        return (self.config.detail != "full" or i < self.config.detail_steps or i % FULL_DETAIL_PERIOD == 0
                or i < self._sample_until)

    def _categorise_optimizer(self, opt: torch.optim.Optimizer) -> None:
        tracker = self.tracker
        # The same parameter and state tensors as last time (the common case, with state updated
        # in place, as torch's optimizers do) are categorised already. A storage swapped under the same
        # tensor object (`p.data = ...`) waits for the next sampled step.
        tensors = [id(p) for group in opt.param_groups for p in group["params"]]
        tensors += [id(v) for state in opt.state.values() for v in state.values()]
        if self._opt_tensors.get(id(opt)) == tensors and not self._sampled_step():
            return
        self._opt_tensors[id(opt)] = tensors
        for group in opt.param_groups:
            for p in group["params"]:
                tracker.set_category(p, PARAMETERS)
                tracker.add_fixed_numel(p.numel())
        for state in opt.state.values():
            for v in state.values():
                if isinstance(v, torch.Tensor):
                    tracker.set_category(v, OPTIMIZER_STATE)

    def _categorise_optimizers(self) -> None:
        for opt in list(self._optimizers.values()):
            self._categorise_optimizer(opt)
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self.tracker.set_category(p.grad, GRADIENTS)

    def _on_root_call(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RootCall | None:
        """A call of a model. Returns the call when its output is to be followed."""
        if self.stopped:
            return None
        try:
            self._root_calls += 1
            key = id(module)
            called = self._called_since_step
            prev = called.get(key)
            grad = torch.is_grad_enabled()
            if (prev is not None and grad and not self._last_call_grad and self.phase == "eval"
                    and prev[0] == self._backwards):
                # In an evaluation loop (no_grad), the same model called with autograd on: training
                # again. The evaluation's last iteration ends here, not with the next training step.
                # (A no_grad call inside a training step, as for pseudo-labels, is not in this phase.)
                self._end_iteration("eval", sys._getframe(1))
                self._called_since_step = called = {}
                prev = None
            self._last_call_grad = grad
            if prev is None and not self.detail and self._in_loop:
                # Watch mode, the model's first call since an optimizer step: the common case, kept
                # cheap; its call site still marks where an evaluation loop's next iteration begins.
                called[key] = (self._backwards, call_site(user_frame(sys._getframe(1))))
                self._step_since_root = False
                if self._iter_batch is None:
                    self._iter_batch = batch_size_of(args, kwargs)
                return None
            call = self.modules.make_call(module, args, kwargs)
            if not self._in_loop:
                self._in_loop = True
                self._begin_iteration(0)
            elif prev is not None and prev[1] == call.call_site and prev[0] == self._backwards:
                # The same call of the same model again (a loop), with no optimizer step and no
                # backward since: that call was an iteration of an evaluation (or inference) loop.
                # Calls from other places (D(real), then D(fake)) belong to one iteration.
                self._end_iteration("eval", sys._getframe(1))
                self._called_since_step = called = {}
            called[key] = (self._backwards, call.call_site)
            if self._iter_batch is None:
                self._iter_batch = call.batch_size
            if call.batch_size and not self.tracker.batch_size:
                self.tracker.batch_size = call.batch_size
            self._step_since_root = False
            if torch.is_autocast_enabled() or torch.is_autocast_enabled("cpu"):
                self._autocast_used = True
            mode = (grad, module.training)
            if mode != self._last_call_mode:
                self._last_call_mode = mode
                if self.detail and not self.modules.packing:
                    # Another kind of call (training <-> evaluation): the saved tensors of this one
                    # are not those of the sampled steps. Measured, not inferred, until the boundary.
                    self.tracker.infer_saved = False
                    self.modules.set_pack(True)
            return call
        except Exception as e:
            self._warn(f"internal error at a model call: {e!r}", tb=True)
            return None

    def _on_root_output(self, call: RootCall, output: Any) -> None:
        if self.stopped or not call.grad_enabled:
            return
        try:
            record = ForwardRecord(module=call.name, site=call.site, step=self.index, phase=self.phase)
            if self.detail:
                key = id(call.module)
                if self.modules.packing:
                    record.saved_bytes = self._root_saved[key] = self.tracker.saved_bytes_of(key)
                else:  # between sampled steps: what this model's forward saved on the last sampled one
                    record.saved_bytes = self._root_saved.get(key, 0)
            self.forwards.watch(output, record)
            self._live_after_call = self.tracker.live
        except Exception as e:
            self._warn(f"internal error after a model call: {e!r}", tb=True)

    def _on_forward_backward(self, record: ForwardRecord) -> None:
        self._backwards += 1

    def _on_forward_dead(self, record: ForwardRecord) -> None:
        if not record.backpropagated and not self.stopped:
            with self._lock:
                self.doctor.forward_dropped(record, self.index)

    def _on_peak_watch(self, live: int) -> None:
        """A new high of this iteration: note old storages still alive, and who holds them."""
        tracker = self.tracker
        tracker.peak_watch_at = int(live * 1.01)
        # Within an iteration old storages only die and the watch fires only higher: once no old
        # storage is worth naming, none will be until the next iteration (begin_step re-arms it).
        if tracker.old_transient_bytes < LINGER_MIN_SHARE * live:
            self._lingering = {}
            tracker.peak_watch_at = sys.maxsize
            return
        big = tracker.old_transient_items(-(-live // 100))  # at least 1% of live bytes
        if not big:
            tracker.peak_watch_at = sys.maxsize
            return
        names = names_of_storages(main_thread_frame(), {k for k, _, _, _ in big})
        found: dict[int, LingeringCandidate] = {}
        for k, nbytes, step, seq in big:
            c = LingeringCandidate(key=k, nbytes=nbytes, created_step=step, seq=seq)
            if k in names:
                path, frame = names[k]
                code = frame.f_code
                c.path, c.file, c.function = path, code.co_filename, code.co_name
                c.first_line, c.line = code.co_firstlineno, frame.f_lineno
            found[k] = c
        self._lingering = found
        tracker.set_linger(list(found))

    # -- iterations ------------------------------------------------------------------------------
    def _begin_iteration(self, index: int) -> None:
        self.index = index
        self.forwards.step = index
        sampled = self._sampled_step()
        self.forwards.sample_sites = self.tracker.sample_sites = sampled
        # Between sampled steps the native tracker infers saved storages: the pack hook rests.
        pack = sampled or not self.tracker.infers_saved
        self.tracker.infer_saved = not pack
        self.modules.set_pack(pack)
        self._iter_t0 = time.perf_counter()
        self._iter_batch = None
        self._opt_in_iteration = False
        self._iter_detailed = self.detail
        self.tracker.begin_step(index, min_old_bytes=4096)
        self._lingering = {}
        if self.cuda.active:
            try:
                self.cuda.backend.reset_peak(self.cuda.index)
            except Exception:
                pass

    def _end_iteration(self, phase: str, frame: FrameType | None) -> None:
        with self._lock:
            self._record_iteration(phase, frame)
            self._schedule(phase)
            if phase != self.phase:  # a new phase: its next iterations are sampled
                self._sample_until = self.index + 1 + PHASE_SAMPLED_STEPS
            self._begin_iteration(self.index + 1)
            self.phase = phase
        now = time.perf_counter()
        if now - self._last_publish > 0.1:
            self._publish()

    def _record_iteration(self, phase: str, frame: FrameType | None) -> None:
        tracker = self.tracker
        detailed = self._iter_detailed and self.detail
        cuda_peak = cuda_reserved = None
        counters = self.cuda.on_step() if self.cuda.active else None
        if counters is not None:
            cuda_peak = counters.allocated_peak_bytes
            cuda_reserved = counters.reserved_bytes
            self._run_peak_cuda = max(self._run_peak_cuda, cuda_peak)
        if detailed:
            peak, end = tracker.step_peak, tracker.live
        elif counters is not None:
            peak, end = counters.allocated_peak_bytes, counters.allocated_bytes
        else:  # watched on CPU: what detail last measured; the counter guards against change
            last = self._last_detailed
            peak = last.peak_bytes if last else tracker.step_peak
            end = last.end_bytes if last else tracker.live
        rec = IterationRecord(
            index=self.index, phase=phase, detailed=detailed, peak_bytes=peak, end_bytes=end,
            batch_size=self._iter_batch, seconds=time.perf_counter() - self._iter_t0,
            cuda_allocated_peak=cuda_peak, cuda_reserved=cuda_reserved,
        )
        if detailed:
            points = tracker.local_peaks + [(tracker.live, tracker.scaled_live)]
            if points != self._last_points:  # a steady loop repeats its points step after step
                self._last_points, self._last_frontier = points, frontier_from_live(points)
            rec.frontier = self._last_frontier
            self.modules.end_step()
            if not self._opt_in_iteration:  # else each optimizer's hooks did it, moments ago
                if phase == "train":
                    self.modules.record_gradients()
                self._categorise_optimizers()
            rec.lingering = self._resolve_lingering()
            if self._diagnosis_due(rec):
                t0 = time.perf_counter()
                rec.variables = census(frame, max_frames=16, forward_keys=set(self.forwards.by_node), step=self.index)
                self.doctor.observe(rec, self.forwards.by_node)
                self._last_diagnosed = rec
                # The next sampled census: every FULL_DETAIL_PERIOD-th step, fewer where a census
                # costs more than CENSUS_SHARE of a step's time (never fewer than every 256th).
                took, step_time = time.perf_counter() - t0, max(rec.seconds, 1e-6)
                period = min(256, max(FULL_DETAIL_PERIOD, math.ceil(took / (CENSUS_SHARE * step_time))))
                self._next_census = self.index - self.index % FULL_DETAIL_PERIOD + period
            self._last_detailed = rec
            if phase == "train" and self.config.advise and not hasattr(self, "_advisor_replays"):
                # The advisor's replays of the training step on fake tensors (no memory), made now
                # while the model is alive; the session's hooks stand still meanwhile.
                from memprof.advise.replay import make_replays

                stopped, self.stopped = self.stopped, True
                self._advisor_replays = None
                try:
                    self._advisor_replays = make_replays(
                        list(self.modules.last_inputs.values()), list(self._optimizers.values()), self.modules.records(),
                        sources=[self.config.script])
                except Exception as e:
                    self._warn(f"the advisor's replay failed: {e!r}")
                finally:
                    self.stopped = stopped
        self.iterations.append(rec)

    def _census_sampled(self) -> bool:
        """A sampled step for the census: as :meth:`_sampled_step`, but with ``--detail full`` at
        most CENSUS_SHARE of the run's time goes to it (``_next_census``, set after each census)."""
        i = self.index
        return self.config.detail != "full" or i < self.config.detail_steps or i >= self._next_census

    def _diagnosis_due(self, rec: IterationRecord) -> bool:
        """Whether this detailed iteration gets a census of the user's variables and the doctor.

        Always in the default mode, where detail is already a sample. With ``--detail full``,
        every step is measured op by op, but the census (a walk of the user's frames, objects and
        graphs: most of a small step's cost) runs on the sampled steps (:meth:`_sampled_step`) and
        wherever it can find something new: when memory at the boundary, the phase or the
        lingering tensors changed since the last census, and while a graph from an earlier
        iteration is alive (a kept history holds no new bytes).
        """
        last = self._last_diagnosed
        if (self._census_sampled() or last is None or rec.end_bytes != last.end_bytes
                or rec.phase != last.phase or rec.lingering or last.lingering):
            return True
        index = rec.index
        for r in self.forwards.by_node.values():
            if r.step < index:
                return True
        return False

    def _resolve_lingering(self) -> list[LingeringCandidate]:
        """Old storages alive at a peak that died soon after: what dropping them earlier would save.

        Freed later in the same iteration: the peak without it is the higher of (the peak minus
        its bytes) and the highest point after it died. Still alive at the iteration's end and
        freed during the next one: it was there for the whole rest of the iteration.
        """
        tracker = self.tracker

        def alive(c: LingeringCandidate) -> bool:  # its own storage, not a newer one under the same key
            return tracker.seq_of(c.key) == c.seq

        confirmed = []
        for c in self._prev_lingering:
            if not alive(c):
                c.freed_before_end = True
                c.saving = c.nbytes
                confirmed.append(c)
        deferred = []
        peak = tracker.step_peak
        for c in self._lingering.values():
            c.peak = peak
            idx = tracker.linger_index(c.key)
            if idx >= 0:
                after = max([lp[0] for lp in tracker.local_peaks[idx:]] + [tracker.live])
                c.freed_before_end = True
                c.saving = max(0, min(c.nbytes, peak - after))
                confirmed.append(c)
            elif alive(c):
                deferred.append(c)
        self._prev_lingering = deferred
        tracker.set_linger([])
        return confirmed

    def _schedule(self, phase: str) -> None:
        """Decide whether the next iteration runs in detail."""
        cfg = self.config
        if cfg.detail == "off":
            self._set_detail(False)
            return
        if cfg.detail == "full" or self.tracker.limit is not None:
            self._set_detail(True)
            return
        n = self.index + 1
        want = n < cfg.detail_steps
        if phase != self.phase:
            self._rearm = max(self._rearm, 4)  # a new phase (training <-> evaluation): look again
        counter = None if self.cuda.active else heap_in_use_bytes()
        if counter is None:
            counter = self._counter()
        if self.detail:
            self._counter_high = max(self._counter_high, counter)
            self._watched_since_detail = 0
        else:
            self._watched_since_detail = self.index - (self._last_detailed.index if self._last_detailed else 0)
            # The allocator's bytes in use (CUDA's; on CPU the C heap's, else the resident set) at
            # a boundary: a margin above the highest that detail saw means memory beyond what it measured.
            margin = WATCH_MARGIN_BYTES
            if counter > self._counter_high + margin:  # memory beyond what detail saw: look again
                self._rearm = max(self._rearm, 2)
                self._counter_high = counter
            elif self._watched_since_detail >= self._watch_period:
                self._rearm = max(self._rearm, 2)
                self._watch_period = min(self._watch_period * 2, 4096)
        if self._rearm > 0:
            self._rearm -= 1
            want = True
        self._set_detail(want)

    def _counter(self) -> int:
        if self.cuda.active:
            try:
                return self.cuda.allocated()
            except Exception:
                return 0
        return _rss_bytes()

    def _finish_iteration_if_open(self) -> None:
        """At the end of a run: record an evaluation iteration still open, and the last lingering check."""
        if self._in_loop and not self._step_since_root and self._root_calls and not self._opt_in_iteration:
            # The last iteration of an evaluation loop ends with the script; its end is the last model
            # call's, not the empty memory after the script returned.
            # A run that died in its first training step (an out-of-memory in backward) was training.
            training = self.phase == "train" and (self._primary_opt is not None or self._backwards > 0)
            self._record_iteration("train" if training else "eval", None)
            if self.iterations and self.iterations[-1].detailed:
                self.iterations[-1].end_bytes = self._live_after_call
        # Forward passes still pending at the end without backward: their graphs are dropped now.
        self.doctor.finish_forwards([r for r in self.forwards.pending() if not r.backpropagated], self.index)

    # -- out of memory -------------------------------------------------------------------------
    def capture_oom(self, requested: int | None, source: str) -> None:
        """Record what holds memory now; called at the moment of an out-of-memory."""
        if self._oom is not None:
            return
        tracker = self.tracker
        live, cat = tracker.live, list(tracker.cat)
        refs: list[StorageRef | StorageInfo] = list(tracker.live_refs())
        failed: StorageRef | StorageInfo | None = None
        if source == "memory-limit" and requested:  # the tracker counted the request that failed: not held
            failed = next((r for r in reversed(refs) if r.seq == tracker.seq), None)
            if failed is not None:
                refs = [r for r in refs if r is not failed]
                live -= failed.nbytes
                cat[failed.category] -= failed.nbytes
        # The failing iteration's frontier so far, the request included: what it needed at least.
        req = requested or 0
        req_scaled = req if failed is None or failed.scaled else 0  # CUDA: a large request is a batch's
        need = (live + req, tracker.scaled_live - (failed.nbytes if failed is not None and failed.scaled else 0) + req_scaled)
        partial = frontier_from_live(tracker.local_peaks + [(tracker.live, tracker.scaled_live), need])
        pre_fixed = sum(r.nbytes for r in refs if r.step == PRE_LOOP and r.category >= ACTIVATIONS and not r.scaled)
        pre_scaled = sum(r.nbytes for r in refs if r.step == PRE_LOOP and r.category >= ACTIVATIONS and r.scaled)
        refs = sorted(refs, key=lambda r: -r.nbytes)
        if not self._optimizers:  # died before the first optimizer step: find the optimizers anyway
            try:
                params = {id(p) for m in self.modules.roots.values() for p in m.parameters()}
                for opt in live_objects(torch.optim.Optimizer):
                    if any(id(p) in params for g in opt.param_groups for p in g["params"]):
                        self._optimizers[id(opt)] = opt
            except Exception:
                pass
        by_module: dict[str, int] = {}
        for r in refs:
            name = r.module or ("(before the first step)" if r.step == PRE_LOOP else "(outside modules)")
            by_module[name] = by_module.get(name, 0) + r.nbytes
        largest = [
            TensorInfo(
                bytes=r.nbytes, shape=r.shape, dtype=r.dtype, category=CATEGORIES[r.category].value,
                module=r.module, created_step=r.step, file=r.site[0] if r.site else None,
                line=r.site[1] if r.site else None,
            )
            for r in refs[:10]
        ]
        self._oom = OomCapture(
            requested_bytes=requested, live_bytes=live,
            limit_bytes=self.config.memory_limit_bytes,
            breakdown={c.value: cat[i] for i, c in enumerate(CATEGORIES)},
            by_module=dict(sorted(by_module.items(), key=lambda kv: -kv[1])[:12]),
            largest=largest, step=self.index, source=source,
            partial_frontier=partial, batch_size=self._iter_batch or tracker.batch_size,
            pre_loop_fixed_bytes=pre_fixed, pre_loop_scaled_bytes=pre_scaled,
        )

    # -- the report ------------------------------------------------------------------------------
    def run_data(self) -> RunData:
        device_type = "cuda" if self.cuda.active else "cpu"
        dev = self.cuda.device() if self.cuda.active else None
        optimizers = []
        for opt in list(self._optimizers.values()):
            state = sum(
                v.untyped_storage().nbytes()
                for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.dim() > 0
            )
            params = [p for g in opt.param_groups for p in g["params"]]
            options = {k: v for k, v in opt.defaults.items() if isinstance(v, (bool, int, float, str, type(None)))}
            optimizers.append(OptimizerInfo(
                type=type(opt).__name__, state_bytes=state, param_bytes=sum(p.untyped_storage().nbytes() for p in params),
                param_count=sum(p.numel() for p in params), options=options, ref=weakref.ref(opt),
            ))
        cuda_final = None
        if self.cuda.steps:
            from dataclasses import asdict

            cuda_final = asdict(self.cuda.steps[-1])
        peak = self._run_peak_cuda if self.cuda.active and self._run_peak_cuda else self.tracker.peak
        if cuda_final is not None:
            try:  # what nvidia-smi sees: the advisor's CUDA context estimate
                free, total = self.cuda.backend.mem_get_info(self.cuda.index)
                cuda_final.update(device_free_bytes=int(free), device_total_bytes=int(total))
            except Exception:
                pass
        replays = getattr(self, "_advisor_replays", None)
        if replays is None and self.config.advise and self.modules.last_inputs:
            # No training step completed (an out-of-memory at the first one, or no training): replay
            # now if the model still lives (an exception's traceback keeps it).
            try:
                from memprof.advise.replay import make_replays

                replays = self._advisor_replays = make_replays(
                    list(self.modules.last_inputs.values()), list(self._optimizers.values()), self.modules.records(),
                    sources=[self.config.script])
            except Exception as e:
                self._warn(f"the advisor's replay failed: {e!r}")
        return RunData(
            iterations=self.iterations, peak_bytes=peak, tracked_peak_bytes=self.tracker.peak,
            breakdown_at_peak={c.value: self.tracker.peak_cat[i] for i, c in enumerate(CATEGORIES)},
            device_type=device_type, device_total_bytes=dev[1] if dev else None,
            budget_bytes=self.config.budget_bytes, memory_limit_bytes=self.config.memory_limit_bytes,
            optimizers=optimizers, modules=self.modules.records(), cuda=cuda_final, oom=self._oom,
            autocast_used=self._autocast_used, batch_size=self.tracker.batch_size,
            pre_loop_peak=self.tracker.pre_loop_peak if self.tracker.step != PRE_LOOP else self.tracker.step_peak,
            calls=list(self.modules.last_inputs.values()), replays=replays,
            batch_collides=bool(self.tracker.batch_size)
            and any(self.tracker.batch_size in shape for shape in self.tracker.fixed_shapes),
        )

    def _build_report(self, status: Status, exc: BaseException | None, exit_code: int | None) -> Report:
        data = self.run_data()
        dev = self.cuda.device() if self.cuda.active else None
        device = DeviceInfo(type=data.device_type, name=dev[0] if dev else "cpu", total_bytes=dev[1] if dev else None,
                            index=self.cuda.index if self.cuda.active else None)
        breakdown = Breakdown.from_mapping(data.breakdown_at_peak)
        if data.peak_bytes != breakdown.total:  # CUDA: the allocator's peak; rounding etc. is "other"
            breakdown.other += data.peak_bytes - breakdown.total
            breakdown.other = max(breakdown.other, 0)
        steps = [
            StepRecord(index=i, peak_bytes=it.peak_bytes, end_bytes=it.end_bytes, batch_size=it.batch_size,
                       seconds=round(it.seconds, 6), phase=it.phase, detailed=it.detailed)
            for i, it in enumerate(self.iterations)
        ]
        modules = sorted(
            (ModuleRecord(name=m.name, type=m.type, parameter_bytes=m.parameter_bytes,
                          activation_bytes=m.activation_bytes, gradient_bytes=m.gradient_bytes, calls=m.calls)
             for m in self.modules.records()),
            key=lambda m: (-m.activation_bytes, -m.parameter_bytes, m.name),
        )
        report = Report(
            script=self.config.script, argv=list(self.config.argv), status=status, device=device,
            peak_bytes=int(data.peak_bytes), steps=steps, breakdown_at_peak=breakdown, modules=modules,
            exit_code=exit_code, duration_seconds=time.perf_counter() - self._t0, memprof_version=__version__,
        )
        if exc is not None:
            report.error = f"{type(exc).__name__}: {exc}"[:2000]
        if self.cuda.active:
            report.cuda = data.cuda or {}
            report.cuda["history_recorded"] = self.cuda.history
        self.warnings.extend(e for e in self.cuda.errors if e not in self.warnings)
        findings: list[Finding] = []
        try:
            findings = self.doctor.finish(data, status=status, exc=exc)
        except Exception as e:
            self._warn(f"the doctor failed: {e!r}", tb=True)
        report.findings = findings
        if data.oom is not None:
            report.oom = {
                "source": data.oom.source, "requested_bytes": data.oom.requested_bytes,
                "live_bytes": data.oom.live_bytes, "limit_bytes": data.oom.limit_bytes,
                "breakdown": data.oom.breakdown, "by_module": data.oom.by_module, "step": data.oom.step,
            }
            report.largest_tensors = [
                {"bytes": t.bytes, "shape": list(t.shape), "dtype": t.dtype, "category": t.category,
                 "module": t.module, "created_step": t.created_step, "file": t.file, "line": t.line}
                for t in data.oom.largest
            ]
        if self.config.advise:
            try:
                from memprof.advise import advise

                advice = advise(data)
                report.recommendations = advice.recommendations
                report.advisor = advice.model
            except Exception as e:
                self._warn(f"the advisor failed: {e!r}", tb=True)
        report.warnings = list(self.warnings)
        return report

    # -- live channel --------------------------------------------------------------------------
    def _start_publisher(self) -> None:
        try:
            from memprof.live.channel import LivePublisher

            self._publisher = LivePublisher.start({"script": self.config.script})
        except Exception as e:
            self._publisher = None
            if os.environ.get("MEMPROF_LIVE_SOCKET"):
                self._warn(f"live channel unavailable: {e}")

    def _publish(self, final: bool = False) -> None:
        if self._publisher is None:
            return
        try:
            from memprof.live.state import LiveSample, LiveState
            from memprof.report.json_io import report_to_dict

            now = time.perf_counter()
            self._last_publish = now
            # Only the iterations new since the last publish are walked: cost independent of run length.
            for it in self.iterations[self._published_upto:]:
                self._published_t += it.seconds
                self._samples.append(LiveSample(t=round(self._published_t, 4), bytes=it.peak_bytes, step=it.index))
            self._published_upto = len(self.iterations)
            samples = list(self._samples)
            marks = [s.t for s in samples]
            last = self.iterations[-1] if self.iterations else None
            dev = self.cuda.device() if self.cuda.active else None
            device: dict[str, Any] = {"type": "cuda" if self.cuda.active else "cpu"}
            if dev is not None:
                device.update(name=dev[0], total_bytes=dev[1])
            report = self.report
            state = LiveState(
                pid=os.getpid(), script=self.config.script, argv=list(self.config.argv), started_at=self._wall0,
                status=report.status.value if (final and report) else "running",
                step=len(self.iterations), phase=self.phase, batch_size=last.batch_size if last else None,
                current_bytes=last.end_bytes if last else self.tracker.live,
                peak_bytes=max(self.tracker.peak, self._run_peak_cuda), budget_bytes=self.config.budget_bytes,
                device=device, peak_step=self.tracker.peak_step,
                breakdown=dict(zip((c.value for c in CATEGORIES), self.tracker.peak_cat, strict=True)),
                samples=samples, step_marks=marks, report_path=self.config.report_path,
            )
            if report is not None:
                d = report_to_dict(report)
                state.modules = d["modules"][:50]
                state.findings = d["findings"]
                state.recommendations = d["recommendations"]
                state.peak_bytes = report.peak_bytes
            else:
                state.modules = [
                    {"name": m.name, "type": m.type, "parameter_bytes": m.parameter_bytes,
                     "activation_bytes": m.activation_bytes, "gradient_bytes": m.gradient_bytes, "calls": m.calls}
                    for m in sorted(self.modules.records(), key=lambda m: -m.activation_bytes)[:50]
                ]
                state.findings = [_finding_dict(f) for f in self.doctor.findings]
            self._publisher.publish(state)
        except Exception as e:
            self._warn(f"live channel: {e!r}")


def _finding_dict(f: Finding) -> dict[str, Any]:
    return {"kind": f.kind.value, "severity": f.severity.value, "file": f.file, "line": f.line,
            "variable": f.variable, "bytes": f.bytes, "message": f.message, "advice": f.advice, "step": f.step}


def _live_modules() -> list[torch.nn.Module]:
    return live_objects(torch.nn.Module)


def current_user_frame() -> FrameType | None:
    return user_frame(sys._getframe(1))


__all__ = ["Session", "SessionConfig", "ACTIVATIONS", "OTHER"]
