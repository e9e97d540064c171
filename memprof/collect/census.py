"""The census: what holds tensors in the user's program, and the autograd graphs behind them.

At a detailed step boundary the census follows references from the user's frames
(:mod:`memprof.collect.holders`: locals, objects, containers, closures, generators, module
attributes and buffers, at any depth, in a bounded walk) and summarises every holder of tensors:
how many, how many bytes, how big the autograd history behind them is, whether that history still
holds saved tensors (which backward frees, unless ``retain_graph=True`` or no backward ran), and
what tells where it is changed: the op that made the newest node of its graph, the user line that
made its newest storage (when the storage tracker knows it), how its chain is written in the
source. The doctor compares these observations from step to step.

It also offers :func:`live_tensors`, the heap scan that adds storages created while the tracker
was off (watch mode, or before ``memprof.track()``), and :func:`names_of_storages`, the holder of
given storages.

Known limitations: only what the main thread's user frames (and the user's modules) reach is
seen; the walk and the graph traversals are bounded (``holders.MAX_OBJECTS``, ``MAX_NODES``).
"""

from __future__ import annotations

import gc
import itertools
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from memprof.collect.graph_walk import MAX_NODES, GraphWalker, saved_by_graphs, stamp, storage_key
from memprof.collect.holders import (
    CONTAINER,
    CONTAINERS,
    OBJECT,
    TENSOR,
    Link,
    Walk,
    frame_locals,
    kind_of,
    release_locals_snapshot,
)
from memprof.collect.sites import is_user_file, user_frames
from memprof.model.run import VarObservation

__all__ = ["MAX_NODES", "GraphWalker", "Observation", "census", "live_objects", "live_tensors", "names_of_storages",
           "reachable_tensors", "release_locals_snapshot"]

MAX_ITEMS = 20000  # container items looked at per variable
SAMPLE_ENDS = 512  # a container longer than 4x this is read by its first and last items
last_scan_seconds = 0.02  # how long the last heap scan (live_objects) took
last_census_seconds = 0.0  # how long the last census took...
last_census_objects = 0  # ...and how many objects its walk visited

_CONTAINERS = CONTAINERS
_SKIP_TYPES = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type, types.MethodType)
SiteOf = Callable[[torch.Tensor], "tuple[str, int] | None"]


def _tensors_in(value: Any, limit: int = MAX_ITEMS, objects: bool = True) -> Iterator[torch.Tensor]:
    """Tensors in a container, two levels deep (a list of (logits, target) tuples, a dict of lists),
    and with ``objects`` on its items' attributes (a list of records)."""
    seen = 0
    items: Iterable[Any] = value.values() if isinstance(value, dict) else value
    for item in items:
        seen += 1
        if seen > limit:
            return
        k = kind_of(type(item))
        if k == TENSOR:
            yield item
        elif k == CONTAINER:
            inner: Iterable[Any] = item.values() if isinstance(item, dict) else item
            for sub in inner:
                if isinstance(sub, torch.Tensor):
                    yield sub
        elif k == OBJECT and objects:
            try:
                attrs = object.__getattribute__(item, "__dict__")
            except Exception:
                continue
            for sub in list(attrs.values()) if isinstance(attrs, dict) else ():
                if kind_of(type(sub)) == TENSOR:
                    yield sub


@dataclass
class Observation(VarObservation):
    """A holder the census saw (:class:`VarObservation`), with what tells where it is changed.

    ``path`` names it from the frame (``self.callbacks[0].y_preds_``, ``history (in closure log)``);
    ``file``/``function``/``first_line``/``line`` are the scope its chain is written in, and
    ``expr`` how it is written there (``self.callbacks[0].y_preds_``, ``history``); ``owners`` and
    ``attr``, for a last hop through an attribute, the user's classes of that object (their methods
    change ``self.<attr>``) and the attribute."""

    expr: str = ""
    running: bool = True  # the scope's function is running (False: a closure's, a module's top level)
    owners: tuple[tuple[str, str], ...] = ()
    attr: str | None = None
    root_op: str | None = None  # the op that made the newest tensor's grad_fn ("AddBackward0")
    operand_ops: tuple[str, ...] = ()  # the ops of that node's inputs
    scalar: bool = False  # the newest tensor has one element
    oldest: int | None = None  # the earliest census that saw a node of this holder's graph
    inner: tuple[str, ...] = ()  # the other holders whose graph roots lie in this holder's graph
    site: tuple[str, int] | None = None  # the user line that made the newest storage (the tracker's)
    bounded: bool = False  # a deque with a maxlen: it cannot grow past it
    with_graph: int = 0  # tensors with a grad_fn
    container: str | None = None  # the built-in kind of container: "dict", "list", "deque", "set", "tuple"


def _observe(link: Link, value: Any, walker: GraphWalker, step: int = 0,
             site_of: SiteOf | None = None) -> Observation | None:
    scale = 1.0
    if kind_of(type(value)) == TENSOR:
        tensors: list[torch.Tensor] = [value]
        is_container = False
    else:
        try:
            sample, scale = _sample(value)
            tensors = list(_tensors_in(sample))
        except RuntimeError:  # changed size during iteration (another thread)
            return None
        if not tensors:
            return None
        is_container = True
    walker.reset()
    scope = link.scope
    obs = Observation(
        path=link.path, file=scope.file, function=scope.function, first_line=scope.first_line,
        line=scope.line if scope.line is not None else scope.first_line, is_container=is_container,
        expr=link.expr, running=scope.line is not None, owners=link.owners, attr=link.attr,
        owner_file=link.owners[0][0] if link.owners else None,
        bounded=_bounded(value),
        container=_container_kind(value) if is_container else None,
    )
    newest: torch.Tensor | None = None
    for t in tensors:
        if t.device.type == "meta":
            continue
        obs.tensors += 1
        newest = t
        sk = storage_key(t)
        if sk is not None and sk[0] not in obs.storage_keys:
            obs.storage_keys.add(sk[0])
            obs.bytes += sk[1]
            obs.newest_key = sk[0]
        g = t.grad_fn
        if g is not None:
            obs.with_graph += 1
            obs.graph.graphs += 1
            saved = walker.walk(g, obs.graph)
            seen = stamp(g, step)
            if saved:
                obs.graph.saved_bytes += saved
                obs.graph.graphs_with_saved += 1
                obs.graph.saved_root_keys.append(id(g))
                if obs.graph.first_seen is None or seen < obs.graph.first_seen:
                    obs.graph.first_seen = seen
            obs.graph.root_keys.append(id(g))
    obs.oldest = walker.oldest
    if scale != 1.0:  # a long container, read by its ends: its figures scaled to its length
        obs.tensors, obs.bytes = round(obs.tensors * scale), round(obs.bytes * scale)
        obs.with_graph = obs.graph.graphs = round(obs.with_graph * scale)
    if newest is not None:
        _describe_newest(obs, newest, site_of)
    return obs


def _bounded(value: Any) -> bool:
    """A ``deque(maxlen=...)``, or a container whose tensors are all in such deques (a dict of
    histories ``{"loss": deque(maxlen=100)}``): it cannot grow past its bounds."""
    deque = CONTAINERS[-1]
    if isinstance(value, deque):
        return value.maxlen is not None
    if not isinstance(value, (dict, list, tuple)):
        return False
    found = False
    items: Iterable[Any] = value.values() if isinstance(value, dict) else value
    for seen, item in enumerate(items):
        if seen >= MAX_ITEMS:
            return False
        if isinstance(item, deque):
            if item.maxlen is None:
                return False
            found = True
        elif kind_of(type(item)) in (TENSOR, CONTAINER):
            return False
    return found


def _container_kind(value: Any) -> str | None:
    for t, name in _KINDS:
        if isinstance(value, t):
            return name
    return None


_KINDS = ((dict, "dict"), (CONTAINERS[-1], "deque"), (list, "list"), ((set, frozenset), "set"), (tuple, "tuple"))


def _sample(value: Any) -> tuple[Any, float]:
    """A container, or for a long one its first and last :data:`SAMPLE_ENDS` items (the oldest,
    which tell what survives, and the newest) and the factor from them to its length."""
    n = len(value)
    if n <= 4 * SAMPLE_ENDS:
        return value, 1.0
    items = list(value.values()) if isinstance(value, dict) else list(value)
    return items[:SAMPLE_ENDS] + items[-SAMPLE_ENDS:], n / (2 * SAMPLE_ENDS)


def _describe_newest(obs: Observation, t: torch.Tensor, site_of: SiteOf | None) -> None:
    """The newest tensor of a holder: its size, the op that made it, the line that made its storage."""
    try:
        obs.scalar = t.numel() == 1
        g = t.grad_fn
        if g is not None:
            obs.root_op = type(g).__name__
            obs.operand_ops = tuple(type(n).__name__ for n, _ in g.next_functions if n is not None)
        if site_of is not None:
            obs.site = site_of(t)
    except Exception:
        pass


def _link_graphs(out: list[Observation], visits: list[set[int]]) -> None:
    """Note on each holder the other holders whose graph roots its graph reaches (``mean`` holding
    ``total / count``: its history is ``total``'s)."""
    roots = [(o, set(o.graph.root_keys)) for o in out if o.graph.root_keys]
    if len(roots) < 2:
        return
    for obs, visited in zip(out, visits, strict=True):
        if not visited:
            continue
        own = set(obs.graph.root_keys)
        inner = [o.path for o, keys in roots if o is not obs and not keys & own and keys & visited]
        if inner:
            obs.inner = tuple(inner)


def census(
    start: types.FrameType | None, max_frames: int = 16, forward_keys: set[int] | frozenset[int] = frozenset(),
    step: int = 0, site_of: SiteOf | None = None,
) -> list[Observation]:
    """Observe every holder of tensors that the user's frames at and above ``start`` reach.

    ``site_of``: the storage tracker's user line of a tensor's storage (``ref_of(t).site``)."""
    global last_census_seconds, last_census_objects
    t0 = time.perf_counter()
    walker = GraphWalker(forward_keys=forward_keys)
    out: list[Observation] = []
    visits: list[set[int]] = []
    walk = Walk()
    for link, value in walk.holders(start, max_frames):
        obs = _observe(link, value, walker, step, site_of)
        if obs is not None:
            out.append(obs)
            visits.append(walker.visited)
    _link_graphs(out, visits)
    last_census_seconds, last_census_objects = time.perf_counter() - t0, walk.visited
    return out


def _is_user_object(value: Any) -> bool:
    if isinstance(value, (torch.nn.Module, torch.optim.Optimizer)):
        return True
    mod = getattr(type(value), "__module__", None)
    if mod in (None, "builtins"):
        return False
    try:
        fn = getattr(sys.modules.get(mod), "__file__", None)
    except Exception:
        return False
    return isinstance(fn, str) and is_user_file(fn)


def _user_locals(start: types.FrameType | None, max_frames: int) -> Iterator[tuple[types.FrameType, str, Any]]:
    """(frame, name, value) for each variable of the user's frames at and above ``start``; each
    frame's locals snapshot is released once read (:func:`release_locals_snapshot`)."""
    for frame in user_frames(start, limit=max_frames):
        for name, value in frame_locals(frame):
            yield frame, name, value


class _Code(Protocol):
    @property
    def co_filename(self) -> str: ...
    @property
    def co_name(self) -> str: ...
    @property
    def co_firstlineno(self) -> int: ...


class FrameLike(Protocol):
    """Where :func:`names_of_storages` found a holder's chain written: a frame, or the scope of a
    closure's function (read as a frame is)."""

    @property
    def f_code(self) -> _Code: ...
    @property
    def f_lineno(self) -> int: ...


@dataclass(frozen=True)
class _ScopeCode:
    co_filename: str
    co_name: str
    co_firstlineno: int


@dataclass(frozen=True)
class _ScopeFrame:
    f_code: _ScopeCode
    f_lineno: int


def names_of_storages(start: types.FrameType | None, keys: set[int], max_frames: int = 16,
                      budget: int = 5000) -> dict[int, tuple[str, FrameLike]]:
    """Which holder refers to each storage in ``keys``: a variable of the user's frames (the
    innermost frame wins), else the nearest holder the walk reaches (``budget`` objects at most)."""
    found: dict[int, tuple[str, FrameLike]] = {}
    frames: dict[tuple[str, str, int], types.FrameType] = {}
    for frame, name, value in _user_locals(start, max_frames):
        code = frame.f_code
        frames.setdefault((code.co_filename, code.co_name, code.co_firstlineno), frame)
        if isinstance(value, torch.Tensor):
            sk = storage_key(value)
            if sk is not None and sk[0] in keys and sk[0] not in found:
                found[sk[0]] = (name, frame)
    if len(found) == len(keys):
        return found
    for link, value in Walk(budget).holders(start, max_frames, stop=lambda: len(found) == len(keys)):
        try:
            tensors = [value] if kind_of(type(value)) == TENSOR else list(_tensors_in(value, 1000, objects=False))
        except RuntimeError:
            continue
        for t in tensors:
            sk = storage_key(t)
            if sk is None or sk[0] not in keys or sk[0] in found:
                continue
            s = link.scope
            where: FrameLike | None = frames.get((s.file, s.function, s.first_line)) if s.line is not None else None
            found[sk[0]] = (link.path, where or _ScopeFrame(_ScopeCode(s.file, s.function, s.first_line),
                                                            s.line or s.first_line))
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
    out.extend(saved_by_graphs([t.grad_fn for t in out if t.grad_fn is not None]))
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
