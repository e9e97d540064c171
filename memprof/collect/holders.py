"""What holds tensors: references followed from the user's frames, at any depth, in a bounded walk.

From the locals of the user's frames on the main thread's stack (and the globals of the user's
other modules) the walk goes breadth first through what Python and torch keep references in:
attributes of objects (the user's own classes and a library's: a trainer, its callback list, a
callback's list), container items, module children and buffers, the hooks registered on modules,
closure cells, bound methods and partials, and the locals of suspended generators. Each tensor or
container of tensors met is a *holder*, named by the shortest chain that reaches it
(``net.callbacks[0].y_preds_``, ``history (in closure log)``, ``net.bn1.running_mean``) and
described by where that chain is written in the source (:class:`Link`).

The walk is bounded: :data:`MAX_OBJECTS` objects per walk, :data:`MAX_FANOUT` items followed per
container of non-tensors, a visited set; memprof's own objects, optimizers (their state is the
optimizer's), parameters, modules, classes, frames and code are never entered.
"""

from __future__ import annotations

import collections
import functools
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from memprof.collect.sites import is_user_file, user_frames

MAX_OBJECTS = 20000  # objects visited per walk
MAX_FANOUT = 32  # items followed at each end of a container that holds no tensors
MAX_DEPTH = 16

CONTAINERS = (list, tuple, dict, set, frozenset, collections.deque)

# How the walk treats an object, by its type (cached per type).
SKIP, TENSOR, CONTAINER, MODULE, OBJECT, FUNCTION, METHOD, PARTIAL, GENERATOR = range(9)
_ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice, memoryview)
_NEVER = (
    types.ModuleType, type, types.FrameType, types.CodeType, types.TracebackType, types.BuiltinFunctionType,
    types.BuiltinMethodType, types.WrapperDescriptorType, types.MethodWrapperType, types.GetSetDescriptorType,
    types.MemberDescriptorType, types.MappingProxyType,
    torch.nn.Parameter, torch.optim.Optimizer, torch.dtype, torch.device, torch.Size, torch.Generator,
)
# Objects of these modules' types hold nothing of the user's: memprof's own, torch's internals,
# the interpreter's machinery (threads, logging, imports, sockets).
_SKIP_MODULES = (
    "memprof.", "torch._", "torch.utils.hooks", "threading", "logging", "weakref", "_thread", "_io", "_weakref",
    "_abc", "_pytest", "pluggy", "asyncio", "concurrent.", "multiprocessing", "socket", "ssl", "ctypes",
    "importlib", "inspect", "ast", "typing", "tokenize", "pdb", "bdb", "argparse", "tqdm",
    "IPython.", "ipykernel.", "traitlets.",  # the shell: its user namespace is the cell's own globals
)
_kinds: dict[type, int] = {}
_MODULE_INTERNALS = frozenset(vars(torch.nn.Module()))
_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def kind_of(t: type) -> int:
    k = _kinds.get(t)
    if k is None:
        k = _kinds[t] = _judge(t)
    return k


def _judge(t: type) -> int:
    try:
        if issubclass(t, _ATOMS) or issubclass(t, _NEVER):
            return SKIP
        if issubclass(t, torch.Tensor):
            return TENSOR
        if issubclass(t, CONTAINERS):
            return CONTAINER
        if issubclass(t, torch.nn.Module):
            return MODULE
        if issubclass(t, types.FunctionType):
            return FUNCTION
        if issubclass(t, types.MethodType):
            return METHOD
        if issubclass(t, functools.partial):
            return PARTIAL
        if issubclass(t, (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType)):
            return GENERATOR
        mod = getattr(t, "__module__", "") or ""
        if mod == "memprof" or mod.startswith(_SKIP_MODULES):
            return SKIP
        if t.__dictoffset__ != 0:
            return OBJECT
    except Exception:
        pass
    return SKIP


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a chain's first name is written: a function (or a module's top level), and the line it
    is at when its frame runs (None for a closure's function, which is not running)."""

    file: str
    function: str
    first_line: int
    line: int | None

    @staticmethod
    def of(frame: types.FrameType) -> Scope:
        code = frame.f_code
        return Scope(code.co_filename, code.co_name, code.co_firstlineno, frame.f_lineno)


@dataclass(frozen=True, slots=True)
class Link:
    """How the walk reached a holder: ``expr`` as written in ``scope`` (``self.callbacks[0].y_preds_``,
    ``history``), ``where`` what encloses that scope (`` (in closure log)``), and for the last hop
    through an object's attribute, the object's classes in the user's files (where ``self.<attr>``
    is changed) and the attribute."""

    expr: str
    where: str
    scope: Scope
    owners: tuple[tuple[str, str], ...] = ()  # (file, class name) along the MRO, the user's classes
    attr: str | None = None

    @property
    def path(self) -> str:
        return self.expr + self.where


_owners: dict[type, tuple[tuple[str, str], ...]] = {}


def owners_of(obj: Any) -> tuple[tuple[str, str], ...]:
    """(file, class name) of the classes of ``obj``'s type defined in the user's files (cached)."""
    t = type(obj)
    hit = _owners.get(t)
    if hit is None:
        hit = _owners[t] = _user_classes(t)
    return hit


def _user_classes(t: type) -> tuple[tuple[str, str], ...]:
    out = []
    for cls in t.__mro__:
        mod = sys.modules.get(getattr(cls, "__module__", "") or "")
        fn = getattr(mod, "__file__", None)
        if isinstance(fn, str) and is_user_file(fn):
            out.append((fn, cls.__name__))
    return tuple(out)


def _key_text(key: Any) -> str:
    if isinstance(key, (str, int, float, bool)) or key is None:
        text = repr(key)
        if len(text) <= 40:
            return text
    return "..."


def frame_locals(frame: types.FrameType) -> list[tuple[str, Any]]:
    """A frame's locals, the snapshot that reading them leaves on the frame released at once."""
    try:
        items = list(frame.f_locals.items())
    except Exception:
        return []
    release_locals_snapshot(frame)
    return items


def release_locals_snapshot(frame: types.FrameType) -> None:
    """Drop the snapshot that reading ``frame.f_locals`` leaves on a function frame (Python < 3.13).

    The snapshot dict lives on the frame and keeps the values it copied alive after the script
    rebinds its variables (last iteration's batch, outputs, loss), so memprof's own reads would
    raise the script's memory. Python refreshes it before any use (``locals()``, tracers), so
    emptying it is safe; 3.13+ reads through a proxy that holds nothing (clearing would delete).
    """
    if sys.version_info < (3, 13) and frame.f_code.co_flags & 0x1:  # CO_OPTIMIZED
        try:
            frame.f_locals.clear()
        except Exception:
            pass


def holds_tensors(value: Any, limit: int = 64) -> bool:
    """Whether a container has a tensor among its first items, or in their items (two levels)."""
    try:
        items = value.values() if isinstance(value, dict) else value
        for i, item in enumerate(items):
            if i >= limit:
                return False
            k = kind_of(type(item))
            if k == TENSOR:
                return True
            if k == CONTAINER:
                inner = item.values() if isinstance(item, dict) else item
                for j, sub in enumerate(inner):
                    if j >= limit:
                        break
                    if kind_of(type(sub)) == TENSOR:
                        return True
            elif k == OBJECT:
                d = _vars(item)
                if d is not None and any(kind_of(type(v)) == TENSOR for v in d.values()):
                    return True
    except Exception:  # changed size during iteration (another thread), odd containers
        return False
    return False


def _vars(obj: Any) -> dict[str, Any] | None:
    try:
        d = object.__getattribute__(obj, "__dict__")
    except Exception:
        return None
    return d if isinstance(d, dict) else None


class Walk:
    """One breadth-first walk from the user's frames; :meth:`holders` yields what holds tensors."""

    def __init__(self, budget: int = MAX_OBJECTS) -> None:
        self.budget = budget
        self.seen: set[int] = set()
        self.visited = 0

    def holders(self, start: types.FrameType | None, max_frames: int = 16,
                stop: Callable[[], bool] | None = None) -> Iterator[tuple[Link, Any]]:
        """(link, value) for each tensor or container of tensors reachable from the user's frames at
        and above ``start``, nearest first; ``stop`` ends the walk early when it returns True."""
        queue: collections.deque[tuple[Any, Link, int]] = collections.deque()
        module_globals: set[int] = set()
        frames = user_frames(start, limit=max_frames)
        for frame in frames:
            if frame.f_code.co_name == "<module>":
                module_globals.add(id(frame.f_globals))
        for frame in frames:
            scope = Scope.of(frame)
            for name, value in frame_locals(frame):
                if not name.startswith("__"):
                    queue.append((value, Link(name, "", scope), 0))
        for frame in frames:  # the user's other modules: a module-level cache
            g = frame.f_globals
            if id(g) in module_globals:
                continue
            module_globals.add(id(g))
            file = g.get("__file__")
            if not isinstance(file, str) or not is_user_file(file):
                continue
            scope = Scope(file, "<module>", 0, None)
            where = f" (in module {g.get('__name__', '?')})"
            for name, value in list(g.items()):
                if not name.startswith("__"):
                    queue.append((value, Link(name, where, scope), 1))
        try:
            while queue and self.budget > 0:
                if stop is not None and stop():
                    return
                value, link, depth = queue.popleft()
                k = kind_of(type(value))
                if k == SKIP:
                    continue
                vid = id(value)
                if vid in self.seen:
                    continue
                self.seen.add(vid)
                self.budget -= 1
                self.visited += 1
                if k == TENSOR:
                    yield link, value
                    continue
                if depth >= MAX_DEPTH:
                    continue
                try:
                    if k == CONTAINER:
                        if holds_tensors(value):
                            yield link, value
                            self._container_objects(value, link, depth, queue, holder=True)
                        else:
                            self._container_objects(value, link, depth, queue, holder=False)
                    elif k == MODULE:
                        self._module(value, link, depth, queue)
                    elif k == OBJECT:
                        self._attributes(value, _vars(value), link, depth, queue)
                    elif k == FUNCTION:
                        self._closure(value, link, depth, queue)
                    elif k == METHOD:
                        queue.append((value.__self__, Link(link.expr + ".__self__", link.where, link.scope), depth + 1))
                    elif k == PARTIAL:
                        queue.append((value.args, Link(link.expr + ".args", link.where, link.scope), depth + 1))
                        queue.append((value.keywords, Link(link.expr + ".keywords", link.where, link.scope), depth + 1))
                        queue.append((value.func, Link(link.expr + ".func", link.where, link.scope), depth + 1))
                    elif k == GENERATOR:
                        self._generator(value, link, depth, queue)
                except Exception:  # an odd object: skip it, never fail the run
                    continue
        finally:
            queue.clear()

    def _container_objects(self, value: Any, link: Link, depth: int,
                           queue: collections.deque[tuple[Any, Link, int]], holder: bool) -> None:
        """Follow the items of a container: the objects in a container of tensors (the container
        is the holder of its tensors, the objects' attributes are holders of their own: a callback
        in a list), or every item of one without tensors."""
        if isinstance(value, dict):
            items: list[tuple[str, Any]] = []
            n = len(value)
            for i, (key, item) in enumerate(list(value.items())):
                if i < MAX_FANOUT or i >= n - MAX_FANOUT:
                    items.append((f"[{_key_text(key)}]", item))
        elif isinstance(value, (set, frozenset)):
            items = [("[...]", item) for item in list(value)[:MAX_FANOUT]]
        else:
            seq = list(value)
            n = len(seq)
            index = list(range(min(n, MAX_FANOUT))) + list(range(max(MAX_FANOUT, n - MAX_FANOUT), n))
            items = [(f"[{i}]", seq[i]) for i in index]
        for suffix, item in items:
            k = kind_of(type(item))
            if k == SKIP or k == TENSOR or (holder and k == CONTAINER):
                continue  # a holder's tensors and nested containers are its own
            queue.append((item, Link(link.expr + suffix, link.where, link.scope), depth + 1))

    def _attributes(self, obj: Any, attrs: dict[str, Any] | None, link: Link, depth: int,
                    queue: collections.deque[tuple[Any, Link, int]], skip: frozenset[str] = frozenset()) -> None:
        if not attrs:
            return
        owners = owners_of(obj)
        for attr, sub in list(attrs.items()):
            if attr.startswith("__") or attr in skip:
                continue
            if kind_of(type(sub)) != SKIP:
                queue.append((sub, Link(f"{link.expr}.{attr}", link.where, link.scope, owners, attr), depth + 1))

    def _module(self, module: torch.nn.Module, link: Link, depth: int,
                queue: collections.deque[tuple[Any, Link, int]]) -> None:
        d = _vars(module)
        if d is None:
            return
        owners = owners_of(module)
        for store in ("_buffers", "_modules"):
            for name, sub in list((d.get(store) or {}).items()):
                if sub is not None:
                    queue.append((sub, Link(f"{link.expr}.{name}", link.where, link.scope, owners, name), depth + 1))
        for store in _MODULE_HOOKS:
            for i, hook in enumerate(list((d.get(store) or {}).values())):
                queue.append((hook, Link(f"{link.expr}.{store}[{i}]", link.where, link.scope), depth + 1))
        if owners or not type(module).__module__.startswith("torch."):  # torch's own layers keep only settings
            self._attributes(module, d, link, depth, queue, skip=_MODULE_INTERNALS)

    def _closure(self, fn: types.FunctionType, link: Link, depth: int,
                 queue: collections.deque[tuple[Any, Link, int]]) -> None:
        code = fn.__code__
        cells = fn.__closure__
        if not cells or not is_user_file(code.co_filename):
            return
        scope = Scope(code.co_filename, code.co_name, code.co_firstlineno, None)
        where = f" (in closure {link.path})"
        for name, cell in zip(code.co_freevars, cells, strict=False):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            queue.append((contents, Link(name, where, scope), depth + 1))

    def _generator(self, gen: Any, link: Link, depth: int, queue: collections.deque[tuple[Any, Link, int]]) -> None:
        frame = getattr(gen, "gi_frame", None) or getattr(gen, "cr_frame", None) or getattr(gen, "ag_frame", None)
        if frame is None or not is_user_file(frame.f_code.co_filename):
            return
        scope = Scope.of(frame)
        where = f" (in generator {link.path})"
        for name, value in frame_locals(frame):
            queue.append((value, Link(name, where, scope), depth + 1))
