"""The storage tracker with its ledger in C++: what the detailed mode runs where the op hook is built.

:class:`NativeTracker` keeps the same figures as :class:`memprof.collect.storage.StorageTracker`
(live bytes per category, the peak and its breakdown, the falls within a step, batch scaling, old
storages alive at a step's peak) behind the same interface, but the ledger lives in memprof's op
hook (``memprof/collect/ophook/``): a storage's birth is seen by a C++ ``RecordFunction`` callback and its death
by the default CPU allocator's deleter, swapped for one that counts it. No Python runs per storage,
except for what only Python knows: the user's line that made a large storage, and a weak reference
for a storage not of the default CPU allocator (CUDA's, pinned, shared), whose deleter stays its own.

Python reads a storage's record only when it names one (an out-of-memory, the growth finding,
lingering tensors): :meth:`live_refs` and :meth:`ref_of` make :class:`StorageInfo` copies then.

Known limitations:
- ``--memory-limit`` on CPU needs the Python tracker: only a dispatch mode raises inside an op.
- With ``infer_saved`` on (``--detail full`` between its sampled steps, where the saved-tensor hook
  is off: it costs as much as the rest of the step's bookkeeping), a storage is an activation when
  one made by the same op at the same place in the step was saved for backward on a sampled step;
  each module's saved bytes are those of the sampled steps.
- With ``sample_sites`` off (``--detail full`` between its sampled steps), a large storage made by
  an op gets the line found for the same op making the same bytes at the same position in an
  earlier step (asking Python costs ~8 µs): a loop whose steps run the same ops from other lines
  keeps the earlier lines until the next sampled step.
- A storage stays marked (its deleter swapped) after the run: its death is then counted by nobody,
  and the swapped deleter frees it as the allocator would.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import torch

from memprof.model.categories import OTHER, PERSISTENT, PRE_LOOP
from memprof.model.paths import is_user_file
from memprof.model.paths import judged as _user_files


class StorageInfo:
    """A copy of a live storage's record, as :class:`memprof.collect.storage.StorageRef` has it."""

    __slots__ = ("key", "nbytes", "category", "step", "seq", "site", "module", "scaled", "shape", "dtype")

    def __init__(self, key: int, nbytes: int, category: int, step: int, seq: int, site: tuple[str, int] | None,
                 module: str, scaled: bool, shape: tuple[int, ...], dtype: str) -> None:
        self.key, self.nbytes, self.category, self.step, self.seq = key, nbytes, category, step, seq
        self.site, self.module, self.scaled, self.shape, self.dtype = site, module, scaled, shape, dtype


class _DeathWatch(weakref.ref):  # type: ignore[type-arg]
    __slots__ = ("key",)
    key: int


def _ledger_figure(name: str, doc: str) -> Any:
    """A read-only property: the ledger's figure ``name``, an int."""
    return property(lambda self: int(getattr(self._ledger, name)), doc=doc)


def _ledger_setting(name: str, kind: Callable[[Any], Any], doc: str) -> Any:
    """A property read from and written to the ledger's setting ``name``, of type ``kind``."""
    return property(lambda self: kind(getattr(self._ledger, name)),
                    lambda self, value: setattr(self._ledger, name, value), doc=doc)


class NativeTracker:
    """Counts live storage bytes in the op hook's C++ ledger; the session turns it on for detailed
    steps (:meth:`start`). The interface of :class:`memprof.collect.storage.StorageTracker`."""

    def __init__(self, hook: ModuleType) -> None:
        self.hook = hook
        self._ledger = hook.Ledger()
        self._foreign_flag = int(hook.FOREIGN)  # touch()'s flag: not marked, Python watches its death
        self.feed: str | None = None  # "ophook" while counting
        self._step = PRE_LOOP
        self._sites: list[tuple[str, int] | None] = []
        self._site_index: dict[tuple[str, int] | None, int] = {}
        self._module_names: list[str] = [""]
        self._module_index: dict[str, int] = {"": 0}
        # The saved-tensor pack hook, all in C++ (autograd calls it with no Python frame).
        self.pack: Callable[[torch.Tensor], torch.Tensor] = self._ledger.pack
        self.leave_module: Callable[[], None] = self._ledger.leave_module  # a module ends
        self._watches: dict[int, _DeathWatch] = {}  # key -> weak reference, for storages not marked
        self._on_watch_death = self._watch_died
        self.limit: int | None = None  # never set here: --memory-limit runs the Python tracker
        self.limit_device: str | None = None
        self.oom_request: int | None = None
        self.on_over_limit: Callable[[int], None] | None = None
        self.peak_watch: Callable[[int], None] | None = None
        self._batch_size: int | None = None
        self.fixed_numels: set[int] = set()
        self.fixed_shapes: set[tuple[int, ...]] = set()
        self._fixed_seen: set[tuple[int, ...]] = set()
        self.pre_loop_peak = 0
        self.first_inputs: set[int] = set()

    # -- on and off ------------------------------------------------------------------------------
    def start(self) -> None:
        """Count every storage ops create from now on."""
        if self.feed is None:
            peak = self._on_new_high if self.peak_watch is not None else None
            self.hook.install(self._ledger, self._site_of_op, self._watch, peak)
            self.feed = "ophook"

    def stop(self) -> None:
        if self.feed is not None:
            self.feed = None
            self.hook.uninstall()

    def __enter__(self) -> NativeTracker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the op hook calls (rarely: large storages, storages not marked, new highs) ---------
    def _site_of_op(self) -> int:
        return self._site_id(sys._getframe(1))

    def _site_id(self, f: Any) -> int:
        known = _user_files  # is_user_file's cache, read inline: a walk passes ~10 frames
        while f is not None:
            fn = f.f_code.co_filename
            user = known.get(fn)
            if user is None:
                user = is_user_file(fn)
            if user:
                site: tuple[str, int] | None = (fn, f.f_lineno)
                break
            f = f.f_back
        else:
            site = None
        i = self._site_index.get(site)
        if i is None:
            i = self._site_index[site] = len(self._sites)
            self._sites.append(site)
        return i

    def _watch(self, st: Any, key: int) -> None:
        ref = _DeathWatch(st, self._on_watch_death)
        ref.key = key
        self._watches[key] = ref

    def _watch_died(self, ref: _DeathWatch) -> None:
        if self._watches.get(ref.key) is ref:
            del self._watches[ref.key]
            self._ledger.release(ref.key)

    def _on_new_high(self, live: int) -> None:
        if self.peak_watch is not None:
            self.peak_watch(live)

    def _fresh(self, t: torch.Tensor, key: int, nbytes: int, flags: int) -> None:
        """A storage counted by a call from Python: what the op hook would add."""
        if flags & self._foreign_flag:
            self._watch(t.untyped_storage(), key)
        if nbytes >= self._ledger.site_min_bytes:
            self._ledger.set_site(key, self._site_id(sys._getframe(2)))

    # -- what the session and the collectors call -----------------------------------------------
    def ensure(self, t: torch.Tensor, category: int = OTHER, step: int | None = None) -> int | None:
        """Count ``t``'s storage if it is not yet known (census, tensors made before the session).
        Its key, or None when it has no bytes."""
        key, n, flags = self._ledger.touch(t, category, self._step if step is None else step)
        if not n:
            return None
        if flags:
            self._fresh(t, key, n, flags)
        return int(key)

    def set_category(self, t: torch.Tensor, category: int, only_from: tuple[int, ...] | None = None) -> None:
        if category in PERSISTENT:
            shape = t.shape
            if shape not in self._fixed_seen:
                self._fixed_seen.add(shape)
                self.fixed_shapes.add(tuple(sorted(shape)))
                self._push_scaling()
        mask = 0
        if only_from is not None:
            for c in only_from:
                mask |= 1 << c
        key, n, flags = self._ledger.touch(t, category, self._step, category, mask)
        if flags:
            self._fresh(t, key, n, flags)

    def enter_module(self, key: int, name: str) -> None:
        """A module starts: new storages are charged to it, saved ones to it and its callers."""
        i = self._module_index.get(name)
        self._ledger.enter_module(key, self._module_id(name) if i is None else i)

    def _module_id(self, name: str) -> int:
        """The index the ledger knows module ``name`` by."""
        i = self._module_index.get(name)
        if i is None:
            i = self._module_index[name] = len(self._module_names)
            self._module_names.append(name)
        return i

    def clear_modules(self) -> None:
        self._ledger.clear_modules()

    def saved_bytes_of(self, key: int) -> int:
        """Bytes saved for backward this step while module ``key`` ran."""
        return int(self._ledger.saved_bytes_of(key))

    def take_saved_bytes(self) -> dict[int, int]:
        """This step's saved bytes per module key; the count restarts."""
        return dict(self._ledger.take_saved_bytes())

    def set_categories(self, tensors: list[torch.Tensor | None], category: int) -> None:
        """:meth:`set_category` for each tensor of a list (None: skipped), e.g. the gradients: one
        call into C++ for them all."""
        if category in PERSISTENT:
            for t in tensors:
                if t is not None and t.shape not in self._fixed_seen:
                    self.set_category(t, category)
        for i, key, n, flags in self._ledger.touch_all(tensors, category, self._step):
            t = tensors[i]
            if t is not None:
                self._fresh(t, key, n, flags)

    def ref_of(self, t: torch.Tensor) -> StorageInfo | None:
        try:
            key = t.untyped_storage()._cdata
        except (RuntimeError, NotImplementedError):
            return None
        entry = self._ledger.entry(key)
        return None if entry is None else self._info(entry)

    def live_refs(self) -> list[StorageInfo]:
        """Every live storage's record, oldest first."""
        return [self._info(e) for e in self._ledger.entries()]

    def _info(self, e: tuple[Any, ...]) -> StorageInfo:
        key, nbytes, category, step, seq, site, module, scaled, shape, dtype = e
        return StorageInfo(key, nbytes, category, step, seq, self._sites[site] if site >= 0 else None,
                           self._module_names[module], scaled, shape, str(dtype).replace("torch.", ""))

    def seq_of(self, key: int) -> int:
        return int(self._ledger.seq_of(key))

    def add_fixed_numel(self, n: int) -> None:
        """A parameter's number of elements: storages of that size may be its gradient or state."""
        if n not in self.fixed_numels:
            self.fixed_numels.add(n)
            self._push_scaling()

    def _push_scaling(self) -> None:
        self._ledger.set_scaling(self._batch_size or 0, list(self.fixed_numels), [list(s) for s in self.fixed_shapes])

    @property
    def batch_size(self) -> int | None:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, b: int | None) -> None:
        """As :attr:`memprof.collect.storage.StorageTracker.batch_size`."""
        first = self._batch_size is None
        self._batch_size = b
        self._push_scaling()
        if first and b:
            self._ledger.mark_first_batch(self.first_inputs)

    def begin_step(self, step: int, min_old_bytes: int = 0) -> None:
        """A step boundary: per-step peaks restart; storages alive now become 'old'."""
        if self.step == PRE_LOOP:
            self.pre_loop_peak = max(self.pre_loop_peak, self.step_peak)
        self._ledger.begin_step(step, min_old_bytes)
        self._step = step

    def old_transient_items(self, min_bytes: int) -> list[tuple[int, int, int, int]]:
        """(key, bytes, step, seq) of each old transient storage of at least ``min_bytes``."""
        return [tuple(e) for e in self._ledger.old_entries(min_bytes)]  # type: ignore[misc]

    def set_linger(self, keys: Iterable[int]) -> None:
        self._ledger.set_linger(list(keys))

    def linger_index(self, key: int) -> int:
        return int(self._ledger.linger_index(key))

    # -- the ledger's figures ----------------------------------------------------------------------
    @property
    def module(self) -> str:
        return self._module_names[self._ledger.module]

    @module.setter
    def module(self, name: str) -> None:
        """The innermost module running: new storages are charged to it."""
        self._ledger.module = self._module_id(name)

    @property
    def step(self) -> int:
        return self._step

    @step.setter
    def step(self, s: int) -> None:
        self._step = s  # read by each call from Python: kept here too
        self._ledger.step = s

    # The pack hook may be off between sampled steps: the ledger infers saved storages meanwhile.
    infers_saved = True

    @property
    def peak_watch_at(self) -> int:
        return int(self._ledger.peak_watch_at)

    @peak_watch_at.setter
    def peak_watch_at(self, n: int) -> None:
        self._ledger.peak_watch_at = min(n, sys.maxsize)

    # Settings the ledger reads at births (set from Python, rarely).
    infer_saved = _ledger_setting(
        "infer_saved", bool,
        "The saved-tensor hook is off: a storage born where a saved one was born on a sampled step (the same op, "
        "at the same place in the step, of the same bytes) is counted an activation.")
    sample_sites = _ledger_setting(
        "sample_sites", bool,
        "Look up the user's line of every large storage (the session sets it on its sampled steps); else reuse "
        "the line found for the same op at the same place in an earlier step.")
    site_min_bytes = _ledger_setting("site_min_bytes", int, "below this, the creating line is not looked up")
    peak_watch_share = _ledger_setting(
        "peak_watch_share", float,
        "Old transient bytes below this share of live bytes at a step's first new high: the peak watch is "
        "disarmed for the step without a call.")

    # The ledger's sums, read from C++ (the GIL is held; the ledger's lock guards each read).
    live = _ledger_figure("live", "live storage bytes now")
    peak = _ledger_figure("peak", "the highest live bytes so far")
    peak_seq = _ledger_figure("peak_seq", "the order of birth of the storage that made the peak")
    peak_step = _ledger_figure("peak_step", "the step of the peak")
    step_peak = _ledger_figure("step_peak", "the highest live bytes of this step")
    seq = _ledger_figure("seq", "storages counted so far")
    scaled_live = _ledger_figure("scaled_live", "live bytes of storages that scale with the batch")
    old_transient_bytes = _ledger_figure("old_bytes", "live bytes of old transient storages (begin_step)")

    @property
    def cat(self) -> list[int]:
        return list(self._ledger.cat)

    @property
    def peak_cat(self) -> list[int]:
        return list(self._ledger.peak_cat)

    @property
    def local_peaks(self) -> list[tuple[int, int]]:
        """(live, scaled live) before each fall of this step (a new list of tuples, from C++)."""
        peaks: list[tuple[int, int]] = self._ledger.local_peaks
        return peaks

    def count(self) -> int:
        """Live storages in the ledger."""
        return int(self._ledger.count)
