"""Walking autograd graphs: their nodes, the tensors they saved for backward, and the stamps a
census leaves on the roots it met (:mod:`memprof.collect.census`)."""

from __future__ import annotations

from typing import Any

import torch

from memprof.model.run import GraphStats

MAX_NODES = 4000  # autograd nodes visited per census
STAMP = "memprof_seen"  # the key of a node's metadata: the step a census first saw it as a root


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


def storage_key(t: torch.Tensor) -> tuple[int, int] | None:
    try:
        st = t.untyped_storage()
        return st._cdata, st.nbytes()
    except (RuntimeError, NotImplementedError):
        return None


class GraphWalker:
    """Walks autograd graphs once per census, sharing the node budget.

    Each root a census meets is stamped (in the node's metadata) with the step it was first seen
    at, and a walk notes the oldest stamp under a holder's roots: a graph that still holds what an
    earlier census saw has survived that boundary (``id()`` of a node can be reused once it dies;
    a stamp can't)."""

    def __init__(self, budget: int = MAX_NODES, forward_keys: frozenset[int] | set[int] = frozenset()) -> None:
        self.budget = budget
        self.forward_keys = forward_keys
        self.visited: set[int] = set()
        self.saved_seen: set[int] = set()
        self.oldest: int | None = None

    def reset(self) -> None:
        """A new variable: graphs shared with another variable count for both."""
        self.visited = set()
        self.saved_seen = set()
        self.oldest = None

    def walk(self, root: Any, out: GraphStats) -> int:
        """Visit the graph under ``root``; return live saved bytes found there (new storages only)."""
        saved = 0
        stack = [root]
        oldest = self.oldest
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
            try:
                seen = node.metadata.get(STAMP)
                if seen is not None and (oldest is None or seen < oldest):
                    oldest = seen
            except Exception:
                pass
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
                        sk = storage_key(t)
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
        self.oldest = oldest
        return saved


def stamp(node: Any, step: int) -> int:
    try:
        md = node.metadata
        seen = md.get(STAMP)
        if seen is None:
            md[STAMP] = seen = step
        return int(seen)
    except Exception:
        return step


def saved_by_graphs(roots: list[Any], budget: int = MAX_NODES) -> list[torch.Tensor]:
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
