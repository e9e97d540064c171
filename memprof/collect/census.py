"""References from frames and containers, and the autograd graphs behind them.

At a detailed step boundary the census looks at the user's frames (locals, ``self`` attributes,
attributes of the user's own objects) and summarises every variable that holds tensors: how many,
how many bytes, how big the autograd history behind them is, and whether that history still
holds saved tensors (which backward frees, unless ``retain_graph=True`` or no backward ran).
The doctor compares these observations from step to step.

It also offers :func:`live_tensors`, the heap scan that adds storages created while the tracker
was off (watch mode, or before ``memprof.track()``).

Known limitations: a variable is seen only while a frame on the main thread's stack holds it,
or an object such a frame holds (one level down); traversals are bounded (``MAX_NODES``).
"""

from __future__ import annotations

import collections
import gc
import inspect
import itertools
import sys
import time
import types
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from memprof.collect.sites import is_user_file, user_frames
from memprof.model.run import GraphStats, VarObservation

MAX_NODES = 4000  # autograd nodes visited per census
MAX_ITEMS = 20000  # container items looked at per variable
last_scan_seconds = 0.02  # how long the last heap scan (live_objects) took

_CONTAINERS = (list, tuple, dict, set, frozenset, collections.deque)
_SKIP_TYPES = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type, types.MethodType)


class _SavedNames:
    """Names of a node type's ``_saved_*`` (unpacked) or ``_raw_saved_*`` (as stored) attributes,
    cached per type and prefix: dir() is slow."""

    cache: dict[tuple[type, str], tuple[str, ...]] = {}

    @classmethod
    def _names(cls, node: Any, prefix: str) -> tuple[str, ...]:
        key = (type(node), prefix)
        names = cls.cache.get(key)
        if names is None:
            names = tuple(a for a in dir(node) if a.startswith(prefix))
            cls.cache[key] = names
        return names

    @classmethod
    def of(cls, node: Any) -> tuple[str, ...]:
        return cls._names(node, "_saved_")

    @classmethod
    def raw(cls, node: Any) -> tuple[str, ...]:
        """The saved tensors, read without unpacking."""
        return cls._names(node, "_raw_saved_")


def _nothing_saved(node: Any) -> bool:
    """True when a node holds no saved tensor: freed by a backward, or never defined.

    Reading ``_saved_x`` of a freed node raises (an exception of about 7 µs, on every node of
    every graph a census meets after its backward); its ``_raw_saved_x`` reads without raising
    and has neither data nor an unpack hook then. False when unsure: the caller reads as before.
    """
    names = _SavedNames.raw(node)
    if not names:
        return False
    try:
        for name in names:
            raw = getattr(node, name)
            for s in raw if isinstance(raw, (list, tuple)) else (raw,):
                if s.data is not None or s.unpack_hook is not None:
                    return False
    except Exception:
        return False
    return True


def _storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        st = t.untyped_storage()
        return st._cdata, st.nbytes()
    except (RuntimeError, NotImplementedError):
        return None


class GraphWalker:
    """Walks autograd graphs once per census, sharing the node budget and the visited set."""

    def __init__(self, budget: int = MAX_NODES, forward_keys: frozenset[int] | set[int] = frozenset()) -> None:
        self.budget = budget
        self.forward_keys = forward_keys
        self.visited: set[int] = set()
        self.saved_seen: set[int] = set()

    def reset(self) -> None:
        """A new variable: graphs shared with another variable count for both."""
        self.visited = set()
        self.saved_seen = set()

    def walk(self, root: Any, out: GraphStats) -> int:
        """Visit the graph under ``root``; return live saved bytes found there (new storages only)."""
        saved = 0
        stack = [root]
        while stack and self.budget > 0:
            node = stack.pop()
            k = id(node)
            if k in self.visited:
                continue
            self.visited.add(k)
            self.budget -= 1
            out.nodes += 1
            if k in self.forward_keys:
                out.forward_keys.append(k)
            for name in () if _nothing_saved(node) else _SavedNames.of(node):
                try:
                    value = getattr(node, name)
                except RuntimeError:  # freed by backward
                    break
                except Exception:
                    continue
                for t in value if isinstance(value, (list, tuple)) else (value,):
                    # A saved leaf that requires grad is a parameter: it lives anyway, not for the graph;
                    # a 0-dim one is a wrapped Python number.
                    if isinstance(t, torch.Tensor) and t.dim() > 0 and not (t.is_leaf and t.requires_grad):
                        sk = _storage_key(t)
                        if sk is not None and sk[0] not in self.saved_seen:
                            self.saved_seen.add(sk[0])
                            saved += sk[1]
            try:
                nexts = node.next_functions
            except Exception:
                continue
            for nxt, _ in nexts:
                if nxt is not None and id(nxt) not in self.visited:
                    stack.append(nxt)
        return saved


def _tensors_in(value: Any, limit: int = MAX_ITEMS) -> Iterator[torch.Tensor]:
    """Tensors in a container, two levels deep (a list of (logits, target) tuples, a dict of lists)."""
    seen = 0
    items: Iterable[Any] = value.values() if isinstance(value, dict) else value
    for item in items:
        seen += 1
        if seen > limit:
            return
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, _CONTAINERS):
            inner: Iterable[Any] = item.values() if isinstance(item, dict) else item
            for sub in inner:
                if isinstance(sub, torch.Tensor):
                    yield sub


def _stamp(node: Any, step: int) -> int:
    try:
        md = node.metadata
        seen = md.get("memprof_seen")
        if seen is None:
            md["memprof_seen"] = seen = step
        return int(seen)
    except Exception:
        return step


def _observe(
    path: str, value: Any, frame: types.FrameType, walker: GraphWalker, step: int = 0
) -> VarObservation | None:
    code = frame.f_code
    if isinstance(value, torch.Tensor):
        tensors: list[torch.Tensor] = [value]
        is_container = False
    elif isinstance(value, _CONTAINERS):
        try:
            tensors = list(_tensors_in(value))
        except RuntimeError:  # changed size during iteration (another thread)
            return None
        if not tensors:
            return None
        is_container = True
    else:
        return None
    walker.reset()
    obs = VarObservation(
        path=path, file=code.co_filename, function=code.co_name, first_line=code.co_firstlineno,
        line=frame.f_lineno, is_container=is_container,
    )
    for t in tensors:
        if t.device.type == "meta":
            continue
        obs.tensors += 1
        sk = _storage_key(t)
        if sk is not None and sk[0] not in obs.storage_keys:
            obs.storage_keys.add(sk[0])
            obs.bytes += sk[1]
            obs.newest_key = sk[0]
        g = t.grad_fn
        if g is not None:
            obs.graph.graphs += 1
            saved = walker.walk(g, obs.graph)
            if saved:
                obs.graph.saved_bytes += saved
                obs.graph.graphs_with_saved += 1
                obs.graph.saved_root_keys.append(id(g))
                seen = _stamp(g, step)
                if obs.graph.first_seen is None or seen < obs.graph.first_seen:
                    obs.graph.first_seen = seen
            obs.graph.root_keys.append(id(g))
    return obs


def _is_user_object(value: Any) -> bool:
    if isinstance(value, (torch.nn.Module, torch.optim.Optimizer)):
        return True
    mod = getattr(type(value), "__module__", None)
    if mod in (None, "builtins"):
        return False
    try:
        import sys

        fn = getattr(sys.modules.get(mod), "__file__", None)
    except Exception:
        return False
    return isinstance(fn, str) and is_user_file(fn)


def _user_locals(start: types.FrameType | None, max_frames: int) -> Iterator[tuple[types.FrameType, str, Any]]:
    """(frame, name, value) for each variable of the user's frames at and above ``start``; each
    frame's locals snapshot is released once read (:func:`release_locals_snapshot`)."""
    for frame in user_frames(start, limit=max_frames):
        try:
            local_items = list(frame.f_locals.items())
        except Exception:
            continue
        release_locals_snapshot(frame)
        for name, value in local_items:
            yield frame, name, value


def census(
    start: types.FrameType | None, max_frames: int = 16, forward_keys: set[int] | frozenset[int] = frozenset(),
    step: int = 0,
) -> list[VarObservation]:
    """Observe every tensor-holding variable of the user's frames at and above ``start``."""
    walker = GraphWalker(forward_keys=forward_keys)
    out: list[VarObservation] = []
    seen_values: set[int] = set()
    for frame, name, value in _user_locals(start, max_frames):
        if name.startswith("__") or isinstance(value, _SKIP_TYPES):
            continue
        if isinstance(value, torch.Tensor) or isinstance(value, _CONTAINERS):
            if id(value) in seen_values:
                continue
            seen_values.add(id(value))
            obs = _observe(name, value, frame, walker, step)
            if obs is not None:
                out.append(obs)
        elif hasattr(value, "__dict__") and _is_user_object(value):
            _observe_attributes(name, value, frame, walker, step, seen_values, out, depth=2)
    return out


def _observe_attributes(
    prefix: str, obj: Any, frame: types.FrameType, walker: GraphWalker, step: int, seen_values: set[int],
    out: list[VarObservation], depth: int,
) -> None:
    """Tensors and containers on a user object (``self.history``), and on its user objects
    (``self.meter.total``), ``depth`` levels down."""
    if id(obj) in seen_values:
        return
    seen_values.add(id(obj))
    try:
        attrs = list(vars(obj).items())
    except TypeError:
        return
    owner = _class_file(obj)
    for attr, sub in attrs:
        if attr.startswith("_") or id(sub) in seen_values:
            continue
        if isinstance(sub, torch.Tensor) or isinstance(sub, _CONTAINERS):
            seen_values.add(id(sub))
            obs = _observe(f"{prefix}.{attr}", sub, frame, walker, step)
            if obs is not None:
                obs.owner_file = owner
                out.append(obs)
        elif depth > 1 and hasattr(sub, "__dict__") and not isinstance(sub, _SKIP_TYPES) and _is_user_object(sub):
            _observe_attributes(f"{prefix}.{attr}", sub, frame, walker, step, seen_values, out, depth - 1)


def _class_file(obj: Any) -> str | None:
    import sys

    mod = sys.modules.get(getattr(type(obj), "__module__", "") or "")
    fn = getattr(mod, "__file__", None)
    return fn if isinstance(fn, str) else None


def release_locals_snapshot(frame: types.FrameType) -> None:
    """Drop the snapshot that reading ``frame.f_locals`` leaves on a function frame (Python < 3.13).

    The snapshot dict lives on the frame and keeps the values it copied alive after the script
    rebinds its variables (last iteration's batch, outputs, loss), so memprof's own reads would
    raise the script's memory. Python refreshes it before any use (``locals()``, tracers), so
    emptying it is safe; 3.13+ reads through a proxy that holds nothing (clearing would delete).
    """
    if sys.version_info < (3, 13) and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
        try:
            frame.f_locals.clear()
        except Exception:
            pass


def names_of_storages(start: types.FrameType | None, keys: set[int], max_frames: int = 16) -> dict[int, tuple[str, types.FrameType]]:
    """Which user variable refers to each storage in ``keys`` (the innermost frame wins)."""
    found: dict[int, tuple[str, types.FrameType]] = {}
    for frame, name, value in _user_locals(start, max_frames):
        candidates: list[tuple[str, Any]] = [(name, value)]
        if name == "self" and hasattr(value, "__dict__"):
            candidates.extend((f"self.{a}", v) for a, v in vars(value).items() if not a.startswith("_"))
        for path, v in candidates:
            if isinstance(v, torch.Tensor):
                sk = _storage_key(v)
                if sk is not None and sk[0] in keys and sk[0] not in found:
                    found[sk[0]] = (path, frame)
    return found


def live_objects(cls: type) -> list[Any]:
    """Every object of ``cls`` on the heap (a heap scan: a few ms per 100k Python objects).

    The filter runs at C speed: the distinct types are checked once each, then the objects are
    picked by type, with no Python code per object (``isinstance`` per object costs 4x more).
    """
    global last_scan_seconds
    t0 = time.perf_counter()
    objs = gc.get_objects()
    wanted: set[type] = set()
    with warnings.catch_warnings():  # subclass checks on some deprecated torch classes warn
        warnings.simplefilter("ignore")
        for t in set(map(type, objs)):
            try:
                if issubclass(t, cls):
                    wanted.add(t)
            except Exception:
                continue
    out = list(itertools.compress(objs, map(wanted.__contains__, map(type, objs))))
    del objs
    last_scan_seconds = time.perf_counter() - t0
    return out


def live_tensors() -> list[torch.Tensor]:
    return live_objects(torch.Tensor)


def reachable_tensors(start: types.FrameType | None, max_frames: int = 16) -> list[torch.Tensor]:
    """The tensors a census can reach, and what their autograd graphs saved: the locals of the
    user's frames, containers two levels down, the attributes (private ones too) of user objects
    two levels down, the saved tensors of the graphs behind them (``MAX_NODES`` at most). Where
    a training loop keeps its memory; a heap scan finds the rest, slowly."""
    out: list[torch.Tensor] = []
    seen: set[int] = set()
    for _frame, name, value in _user_locals(start, max_frames):
        if not name.startswith("__"):
            _reach(value, seen, out, 2)
    out.extend(_saved_by_graphs([t.grad_fn for t in out if t.grad_fn is not None]))
    return out


def _reach(value: Any, seen: set[int], out: list[torch.Tensor], depth: int) -> None:
    if isinstance(value, _SKIP_TYPES) or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, _CONTAINERS):
        try:
            out.extend(_tensors_in(value))
        except RuntimeError:  # changed size during iteration (another thread)
            pass
    elif depth > 0 and hasattr(value, "__dict__") and _is_user_object(value):
        try:
            attrs = list(vars(value).values())
        except TypeError:
            return
        for sub in attrs:
            _reach(sub, seen, out, depth - 1)


def _saved_by_graphs(roots: list[Any], budget: int = MAX_NODES) -> list[torch.Tensor]:
    """Tensors saved for backward in the graphs under ``roots``, read without unpacking: a saved
    tensor behind an unpack hook (activation checkpointing, offloading) is left alone."""
    out: list[torch.Tensor] = []
    visited: set[int] = set()
    stack = list(roots)
    while stack and budget > 0:
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        budget -= 1
        try:
            for name in _SavedNames.raw(node):
                raw = getattr(node, name)
                for s in raw if isinstance(raw, (list, tuple)) else (raw,):
                    if s.unpack_hook is None:
                        data = s.data
                        if data is not None:
                            out.append(data)
            nexts = node.next_functions
        except Exception:
            continue
        stack.extend(n for n, _ in nexts if n is not None and id(n) not in visited)
    return out
