"""The one walker over what a model is called with and what it returns: the leaves (tensors and
anything else) inside nested lists, tuples and dicts.

Callers differ in what they open, and how deep: a call's arguments are plain containers; a loss
is looked for in a model's output, which may be a record (a ``ModelOutput``, a namedtuple) or any
object with attributes. The opening rule is an argument (:func:`containers`, :func:`records`,
:func:`attributes`), and ``depth`` counts the levels of containers opened: ``depth=3`` opens the
outer container and two levels inside it, and reads the leaves of the third. A tensor is always a
leaf.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

Items = Callable[[Any], Iterable[Any] | None]  # a container's items, None for a leaf


def containers(obj: Any) -> Iterable[Any] | None:
    """The items of a list or tuple and the values of a dict, subclasses included."""
    if isinstance(obj, (list, tuple)):
        return obj
    if isinstance(obj, dict):
        return obj.values()
    return None


def records(obj: Any) -> Iterable[Any] | None:
    """:func:`containers`, and the fields of a dataclass or namedtuple (a ``ModelOutput``)."""
    if hasattr(obj, "__dataclass_fields__") or hasattr(obj, "_fields"):
        try:
            return list(vars(obj).values()) if hasattr(obj, "__dict__") else list(obj)
        except TypeError:
            return ()
    return containers(obj)


def attributes(obj: Any) -> Iterable[Any] | None:
    """:func:`containers`, and the attributes of any other object that has them."""
    found = containers(obj)
    if found is None and hasattr(obj, "__dict__"):
        return list(vars(obj).values())
    return found


def leaves(obj: Any, depth: int | None = None, items: Items = containers) -> list[Any]:
    """Every leaf under ``obj``, depth first, in order; ``depth=None`` opens every level."""
    out: list[Any] = []
    _collect(obj, depth, items, out)
    return out


def _collect(obj: Any, depth: int | None, items: Items, out: list[Any]) -> None:
    inner = None if isinstance(obj, torch.Tensor) or depth == 0 else items(obj)
    if inner is None:
        out.append(obj)
        return
    below = None if depth is None else depth - 1
    for o in inner:
        _collect(o, below, items, out)


def tensors(obj: Any, depth: int | None = None) -> list[torch.Tensor]:
    """The tensors among the leaves of the plain containers under ``obj``."""
    return [t for t in leaves(obj, depth) if isinstance(t, torch.Tensor)]


def first_tensor(obj: Any, accept: Callable[[torch.Tensor], bool] | None = None, depth: int | None = None,
                 items: Items = containers) -> torch.Tensor | None:
    """The first tensor leaf that ``accept`` accepts (any tensor without it), as :func:`leaves`
    orders them; None when there is none. It stops there: a model's output is searched this way
    at every call."""
    if isinstance(obj, torch.Tensor):
        return obj if accept is None or accept(obj) else None
    inner = None if depth == 0 else items(obj)
    if inner is not None:
        below = None if depth is None else depth - 1
        for o in inner:
            t = first_tensor(o, accept, below, items)
            if t is not None:
                return t
    return None


def map_leaves(obj: Any, leaf: Callable[[Any], Any], depth: int | None = None, max_items: int | None = None,
               exact: bool = False) -> Any:
    """``obj`` rebuilt with ``leaf(x)`` for every leaf ``x``: lists and tuples as their own type,
    dicts as plain dicts. ``exact``: only ``list``, ``tuple`` and ``dict`` themselves are opened, not
    their subclasses; a container over ``max_items`` long is a leaf."""
    if depth is not None and depth <= 0:
        return leaf(obj)
    kind = type(obj)
    below = None if depth is None else depth - 1
    if kind is tuple or kind is list or (not exact and isinstance(obj, (list, tuple))):
        if max_items is None or len(obj) <= max_items:
            out = [map_leaves(o, leaf, below, max_items, exact) for o in obj]
            return out if kind is list else kind(out)
    elif kind is dict or (not exact and isinstance(obj, dict)):
        if max_items is None or len(obj) <= max_items:
            return {k: map_leaves(v, leaf, below, max_items, exact) for k, v in obj.items()}
    return leaf(obj)
