"""Live tensor storage bytes, op by op: the CPU-first measure of memory.

Two trackers keep the same ledger with the same interface: :class:`StorageTracker` here, in Python,
a ``TorchDispatchMode`` that sees every op's outputs, with a weak reference to each storage object
(storages keep one Python object for their lifetime) to say when it dies; and
:class:`memprof.collect.native.NativeTracker`, the same ledger kept in C++ by memprof's op hook, ten
times cheaper, where the hook is built. Views and in-place ops reuse a storage already counted, so
they cost one dict lookup. A storage's key is its ``StorageImpl``'s address (``_cdata``) in both. This counts what
``torch.cuda.memory_allocated`` counts on a GPU, before the allocator's rounding.

Each storage carries a category (parameters, gradients, ...), the step that created it, the user
line that created it (for large ones) and whether it scales with the batch. Running sums per
category keep the breakdown at the peak exact without scanning.

Known limitations:
- Storages created while the mode is off (watch mode, or before a ``track()`` block) are unknown
  until a census (:mod:`memprof.collect.census`) adds them.
- Memory used inside kernels (workspaces) and by DataLoader worker processes is not seen.
- A storage resized in place keeps the size it had when first seen.
"""

from __future__ import annotations

import math
import sys
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from memprof.model.categories import ACTIVATIONS, CATEGORIES, OTHER, PERSISTENT, PRE_LOOP, TRANSIENT_FROM
from memprof.model.paths import is_user_file

_Tensor = torch.Tensor
_Parameter = torch.nn.Parameter
_PLAIN = (_Tensor, _Parameter)
_dispatch_depth = torch._C._len_torch_dispatch_stack
_dispatch_mode_at = torch._C._get_dispatch_stack_at
_no_dispatch = torch._C._DisableTorchDispatch
_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _skip_dynamo(code: Any) -> bool:
    """Tell dynamo never to trace ``code`` nor anything it calls; False where this torch can't."""
    try:
        from torch._C._dynamo.eval_frame import _FrameAction, _FrameExecStrategy, set_code_exec_strategy

        set_code_exec_strategy(code, _FrameExecStrategy(_FrameAction.SKIP, _FrameAction.SKIP))
        return True
    except Exception:
        return False


class StorageRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to one storage and what we know of it."""

    __slots__ = ("key", "nbytes", "category", "step", "seq", "site", "module", "scaled", "shape", "dtype")

    key: int
    nbytes: int
    category: int
    step: int
    seq: int
    site: tuple[str, int] | None
    module: str
    scaled: bool
    shape: tuple[int, ...]
    dtype: str


class StorageTracker(TorchDispatchMode):
    """Counts live storage bytes; the session turns it on for detailed steps (:meth:`start`).

    ``infers_saved`` False: it can't tell saved storages without its pack hook (the native one can).

    A ``TorchDispatchMode``, looking at every op's outputs in Python. ``--memory-limit`` on CPU
    needs it: only a dispatch mode can raise an out-of-memory from inside an op.
    """

    infers_saved = False

    def __init__(self) -> None:
        super().__init__()
        self.feed: str | None = None  # "dispatch" while counting
        self._free_callback = self._on_free  # one bound method for every weak reference
        self.refs: dict[int, StorageRef] = {}
        self.live = 0
        self.peak = 0
        self.peak_seq = 0
        self.peak_step = 0
        self.cat = [0] * len(CATEGORIES)  # live bytes by category code
        self.peak_cat = [0] * len(CATEGORIES)
        self.step = PRE_LOOP
        self.step_peak = 0
        self.seq = 0
        self.module = ""  # the innermost module running (set by the module collector)
        self._modules: list[tuple[int, str]] = []  # the modules running, innermost last: (key, name)
        self._saved_bytes: dict[int, int] = {}  # module key -> bytes saved for backward this step
        self._saved_seen: set[tuple[int, int]] = set()  # (module key, storage key) charged this step
        self.site_min_bytes = 16 * 1024  # below this, the creating line is not looked up
        self.sample_sites = True  # the native tracker's setting; this one always looks the line up
        self.infer_saved = False  # likewise: this one needs its pack hook at every step
        self.limit: int | None = None  # --memory-limit on CPU: raise past this many bytes
        self.limit_device: str | None = None
        # Batch scaling, for the advisor: bytes of storages whose size follows the batch.
        self._batch_size: int | None = None
        self.fixed_numels: set[int] = set()  # numels of parameters: tensors of these sizes don't scale...
        self.fixed_shapes: set[tuple[int, ...]] = set()  # ...when their sorted dims are a parameter's too
        self._fixed_seen: set[tuple[int, ...]] = set()  # the shapes behind fixed_shapes, unsorted
        self._scale_cache: dict[tuple[int, ...], bool] = {}  # shape -> _scales(shape), until what it depends on changes
        self.pre_loop_peak = 0  # the highest live bytes before the first iteration
        self.first_inputs: set[int] = set()  # storage keys of the first model call's tensor inputs
        self.scaled_live = 0
        self.rising = False
        self.local_peaks: list[tuple[int, int]] = []  # (live, scaled_live) before each fall, this step
        # Old transient storages (created in an earlier step, not persistent): lingering candidates.
        self.old_transient: dict[int, StorageRef] = {}
        self.old_transient_bytes = 0
        self.linger_free: dict[int, int] = {}  # candidate key -> index into local_peaks at its free
        self.peak_watch: Callable[[int], None] | None = None
        self.peak_watch_at = 0
        self.peak_watch_share = 0.0  # see add(): below this share of old bytes, no call at the first high
        self.oom_request: int | None = None
        self.on_over_limit: Callable[[int], None] | None = None

    # -- on and off ------------------------------------------------------------------------------
    def start(self) -> None:
        """Count every storage ops create from now on."""
        if self.feed is None:
            self.__enter__()
            self.feed = "dispatch"

    def stop(self) -> None:
        if self.feed is not None:
            self.feed = None
            self.__exit__(None, None, None)

    # -- the dispatch hook: keep it lean, it runs for every op ---------------------------------
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """Whether TorchDispatchMode wraps ``__torch_dispatch__`` in ``torch._disable_dynamo``.

        The wrapper costs a Python frame and an eval-frame switch on every op (about a fifth of
        the detailed mode's cost on a small model), and imports ``torch._dynamo`` (0.8 s) at the
        first op. The same protection, dynamo never tracing the hook nor what it calls, is set
        once on the code objects instead; the wrapper stays where that is not possible.
        """
        fn = cls.__dict__.get("__torch_dispatch__")
        return not (fn is not None and _skip_dynamo(fn.__code__))

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        try:
            op = func._op  # the C++ op itself: skips OpOverload.__call__'s Python frame
        except AttributeError:
            op = func
        out = op(*args, **kwargs) if kwargs else op(*args)
        t = type(out)
        if t is _Tensor or t is _Parameter:
            try:
                st = out.untyped_storage()
            except (RuntimeError, NotImplementedError):  # sparse, nested, functional wrappers
                return out
            if st._cdata not in self.refs:  # views and in-place ops end here
                self._new(st, out, args)
        elif t is tuple or t is list:
            for o in out:
                if isinstance(o, _Tensor):
                    self._track(o, args)
        elif isinstance(out, _Tensor):
            self._track(out, args)
        return out

    def _track(self, t: torch.Tensor, args: Any = ()) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # sparse, nested, functional wrappers
            return
        if st._cdata not in self.refs:
            self._new(st, t, args)

    def _new(self, st: Any, t: torch.Tensor, args: Any = ()) -> None:
        n = st.nbytes()
        if n == 0 or t.is_meta:
            return
        ref = self.add(st, t.shape, t.dtype, n, self.step)
        # Made from a storage that scales, it scales (an LSTM's workspace: flat bytes), unless it has a
        # parameter's number of elements in any shape (a bias's gradient reduced as (1, n))
        if (not ref.scaled and args and ref.step != PRE_LOOP and self._batch_size and ref.shape
                and math.prod(ref.shape) not in self.fixed_numels and self._derived(args)):
            ref.scaled = True
            self.scaled_live += n

    def _derived(self, args: Any) -> bool:
        """Whether an op's inputs (tensors, lists of them) hold a storage that scales with the batch."""
        refs = self.refs
        for a in args:
            for x in (a,) if isinstance(a, _Tensor) else a if type(a) is list or type(a) is tuple else ():
                if isinstance(x, _Tensor):
                    try:
                        r = refs.get(x.untyped_storage()._cdata)
                    except (RuntimeError, NotImplementedError):  # sparse, nested, functional wrappers
                        continue
                    if r is not None and r.scaled:
                        return True
        return False

    def add(self, st: Any, shape: tuple[int, ...], dtype: torch.dtype, n: int, step: int,
            category: int = OTHER) -> StorageRef:
        # Runs for every new storage: attribute stores and lookups only, nothing recomputed.
        ref = StorageRef(st, self._free_callback)
        key = ref.key = st._cdata
        ref.nbytes = n
        ref.category = category
        ref.step = step
        seq = ref.seq = self.seq + 1
        self.seq = seq
        ref.module = self.module
        ref.shape = shape
        name = _DTYPE_NAMES.get(dtype)
        if name is None:
            name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
        ref.dtype = name
        ref.site = self._site() if n >= self.site_min_bytes else None
        if category == OTHER and step != PRE_LOOP and self._batch_size is not None:
            scaled = self._scale_cache.get(shape)
            if scaled is None:
                scaled = self._scale_cache[shape] = self._scales(shape)
        else:
            scaled = False
        ref.scaled = scaled
        self.refs[key] = ref
        live = self.live + n
        self.live = live
        self.cat[category] += n
        if scaled:
            self.scaled_live += n
        self.rising = True
        if self.limit is not None and live > self.limit:
            self._over_limit(n)
        if live > self.step_peak:
            self.step_peak = live
            if live > self.peak:
                self.peak = live
                self.peak_seq = seq
                self.peak_step = step
                self.peak_cat = self.cat.copy()
            if self.peak_watch is not None and live > self.peak_watch_at:
                if self.peak_watch_at == 0 and self.old_transient_bytes < self.peak_watch_share * live:
                    # The step's first new high, and nothing old worth naming: disarmed until the
                    # next step without a call (old storages only die, the watch fires only higher).
                    self.peak_watch_at = sys.maxsize
                else:
                    self.peak_watch(live)
        return ref

    def _on_free(self, ref: StorageRef) -> None:
        if self.refs.pop(ref.key, None) is not ref:
            return
        n = ref.nbytes
        if self.rising:
            self.rising = False
            self.local_peaks.append((self.live, self.scaled_live))
        self.live -= n
        self.cat[ref.category] -= n
        if ref.scaled:
            self.scaled_live -= n
        if self.old_transient.pop(ref.key, None) is not None:
            self.old_transient_bytes -= n
            lf = self.linger_free
            if ref.key in lf:  # a lingering candidate dies: note where in this iteration's peaks
                lf[ref.key] = len(self.local_peaks)

    def _site(self) -> tuple[str, int] | None:
        f = sys._getframe(3)
        while f is not None:
            fn = f.f_code.co_filename
            if is_user_file(fn):
                return (fn, f.f_lineno)
            f = f.f_back  # type: ignore[assignment]
        return None

    def _scales(self, shape: tuple[int, ...]) -> bool:
        b = self._batch_size
        if not b or not shape:
            return False
        if not ((shape[0] >= b and shape[0] % b == 0) or b in shape):
            return False
        # A parameter's size (a gradient, optimizer state, a foreach temporary, a transposed weight
        # gradient) does not scale; the same numel in another shape (an activation) still may.
        return math.prod(shape) not in self.fixed_numels or tuple(sorted(shape)) not in self.fixed_shapes

    def add_fixed_numel(self, n: int) -> None:
        """A parameter's number of elements: storages of that size may be its gradient or state."""
        if n not in self.fixed_numels:
            self.fixed_numels.add(n)
            self._scale_cache.clear()

    @property
    def batch_size(self) -> int | None:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, b: int | None) -> None:
        """The batch size that ``scaled`` refers to. Set first at the first model call, when the
        first batch already exists: the model's inputs of that call (``first_inputs``, storage
        keys of inputs that are whole storages, not views into a data set) are marked scaled then,
        when their shape scales (the batch at any dimension: (sequence, batch) token ids too).
        Without known inputs, every live storage made before the loop with the batch as its leading
        dimension is (not a data set made before the loop, unless one of the batch's size)."""
        first = self._batch_size is None
        self._batch_size = b
        self._scale_cache.clear()
        if not first or not b:
            return
        inputs = self.first_inputs
        for ref in self.refs.values():
            shape = ref.shape
            if (not ref.scaled and ref.category >= TRANSIENT_FROM and ref.step == PRE_LOOP and shape
                    and (ref.key in inputs if inputs else shape[0] == b) and self._scales(shape)):
                ref.scaled = True
                self.scaled_live += ref.nbytes

    def _over_limit(self, n: int) -> None:
        self.oom_request = n
        limit = self.limit or 0
        if self.on_over_limit is not None:
            try:
                self.on_over_limit(n)
            except Exception:
                pass
        raise torch.OutOfMemoryError(
            f"memprof --memory-limit: tried to allocate {n} bytes with {self.live - n} bytes already in use "
            f"of a {limit} byte limit (memprof rehearses an out-of-memory on {self.limit_device or 'this device'})"
        )

    # -- what the session and the collectors call -----------------------------------------------
    def ref_of(self, t: torch.Tensor) -> StorageRef | None:
        try:
            return self.refs.get(t.untyped_storage()._cdata)
        except (RuntimeError, NotImplementedError):
            return None

    def ensure(self, t: torch.Tensor, category: int = OTHER, step: int | None = None) -> StorageRef | None:
        """Track ``t``'s storage if it is not yet known (census, tensors made before the session)."""
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return None
        ref = self.refs.get(st._cdata)
        if ref is not None:
            return ref
        n = st.nbytes()
        if n == 0 or st.device.type == "meta":
            return None
        limit, self.limit = self.limit, None  # a census never raises an out-of-memory
        try:
            ref = self.add(st, t.shape, t.dtype, n, self.step if step is None else step, category)
        finally:
            self.limit = limit
        return ref

    def set_category(self, t: torch.Tensor, category: int, only_from: tuple[int, ...] | None = None) -> None:
        ref = self.ref_of(t)
        if ref is not None and ref.category == category:
            return  # the common case (a parameter, each step): its shape was noted when it got the category
        if category in PERSISTENT:
            shape = t.shape
            if shape not in self._fixed_seen:  # a set of sizes as given: sorting each time is slow
                self._fixed_seen.add(shape)
                self.fixed_shapes.add(tuple(sorted(shape)))
                self._scale_cache.clear()
        if ref is None:
            self.ensure(t, category)
        else:
            self.recategorise(ref, category, only_from)

    def set_categories(self, tensors: list[torch.Tensor | None], category: int) -> None:
        """:meth:`set_category` for each tensor of a list (None: skipped), e.g. the gradients."""
        for t in tensors:
            if t is not None:
                self.set_category(t, category)

    def recategorise(self, ref: StorageRef, category: int, only_from: tuple[int, ...] | None = None) -> None:
        """:meth:`set_category` for a storage already tracked."""
        old = ref.category
        if old == category or (only_from is not None and old not in only_from):
            return
        n = ref.nbytes
        self.cat[old] -= n
        self.cat[category] += n
        if ref.seq <= self.peak_seq:  # alive now and created before the peak: it was part of the peak
            self.peak_cat[old] -= n
            self.peak_cat[category] += n
        if category in PERSISTENT:
            if ref.scaled:
                ref.scaled = False
                self.scaled_live -= n
            if self.old_transient.pop(ref.key, None) is not None:
                self.old_transient_bytes -= n
        ref.category = category

    def begin_step(self, step: int, min_old_bytes: int = 0) -> None:
        """A step boundary: per-step peaks restart; storages alive now become 'old'."""
        if self.step == PRE_LOOP:
            self.pre_loop_peak = max(self.pre_loop_peak, self.step_peak)
        self.step = step
        self.step_peak = self.live
        self.local_peaks = []
        self.rising = False
        old = {k: r for k, r in self.refs.items() if r.category >= TRANSIENT_FROM and r.nbytes >= min_old_bytes}
        self.old_transient = old
        self.old_transient_bytes = sum(r.nbytes for r in old.values())
        self.peak_watch_at = 0

    def _saved(self, t: torch.Tensor) -> tuple[int, int] | None:
        """Autograd saves ``t`` for backward: an activation. Its storage's (key, bytes)."""
        ref = self.ref_of(t)
        if ref is None:
            ref = self.ensure(t)
            if ref is None:
                return None
        if ref.category == OTHER:
            self.recategorise(ref, ACTIVATIONS)
        return ref.key, ref.nbytes

    # -- modules and the saved-tensor hook -------------------------------------------------------
    def enter_module(self, key: int, name: str) -> None:
        """A module starts: new storages are charged to it, saved ones to it and its callers."""
        self._modules.append((key, name))
        self.module = name

    def leave_module(self) -> None:
        if self._modules:
            self._modules.pop()
        self.module = self._modules[-1][1] if self._modules else ""

    def clear_modules(self) -> None:
        self._modules.clear()
        self.module = ""

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """The saved-tensor pack hook: ``t``'s storage is an activation, counted now if new (autograd
        saves an op's output before the op ends), charged once per step to each module running.
        Returns ``t`` detached: itself, it would hold its own graph node in a reference cycle."""
        try:
            found = self._saved(t)
            if found is not None:
                key, n = found
                seen, saved = self._saved_seen, self._saved_bytes
                for m, _ in self._modules:
                    if (m, key) not in seen:
                        seen.add((m, key))
                        saved[m] = saved.get(m, 0) + n
        except Exception:  # never break the user's forward
            pass
        if type(t) in _PLAIN and _dispatch_depth() == 1 and _dispatch_mode_at(0) is self:
            # Only this tracker would see this detach, and an alias needs no counting: skip the
            # trip through Python dispatch (a microsecond per saved tensor).
            with _no_dispatch():
                return t.detach()
        return t.detach()

    def saved_bytes_of(self, key: int) -> int:
        """Bytes saved for backward this step while module ``key`` ran."""
        return self._saved_bytes.get(key, 0)

    def take_saved_bytes(self) -> dict[int, int]:
        """This step's saved bytes per module key; the count restarts."""
        out, self._saved_bytes = self._saved_bytes, {}
        self._saved_seen = set()
        return out

    def seq_of(self, key: int) -> int:
        """The order of birth of the live storage ``key`` (-1: none): tells it from a newer one at
        the same address."""
        ref = self.refs.get(key)
        return -1 if ref is None else ref.seq

    def old_transient_items(self, min_bytes: int) -> list[tuple[int, int, int, int]]:
        """(key, bytes, step, seq) of each old transient storage of at least ``min_bytes``."""
        return [(k, r.nbytes, r.step, r.seq) for k, r in self.old_transient.items() if r.nbytes >= min_bytes]

    def set_linger(self, keys: list[int]) -> None:
        """The lingering candidates whose death to note (:meth:`linger_index`)."""
        self.linger_free = {k: -1 for k in keys}

    def linger_index(self, key: int) -> int:
        """How many falls this step had when candidate ``key`` died; -1: alive, or not a candidate."""
        return self.linger_free.get(key, -1)

    def live_refs(self) -> list[StorageRef]:
        return list(self.refs.values())


# Storages die anywhere, compiled code included: never let dynamo trace the bookkeeping.
_skip_dynamo(StorageTracker._on_free.__code__)
_skip_dynamo(StorageTracker.ensure.__code__)
