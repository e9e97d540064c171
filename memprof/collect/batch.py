"""The batch dimension of a model's input, from what the model reads.

The batch is not always dimension 0 of the input: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``,
``nn.MultiheadAttention`` and ``nn.Transformer*`` read (sequence, batch, features) unless
``batch_first``, and a language model fed (bptt, batch) token ids has its sequence there. Where the
batch is is decided once per root module and rank of its first tensor input (:class:`RootBatch`),
from what is known, strongest first:

1. the batch size the root's batch-layout modules read in its first forward (a global forward
   pre-hook, on for that call only): ``nn.LSTM(batch_first=False)`` reading (35, 20, 200) reads
   20; ``nn.LSTMCell`` and the other cells read (batch, features);
2. the loss after that forward (a loss module, or a ``torch.nn.functional`` loss seen by a
   ``TorchFunctionMode`` until the next model call): the one size its input and target share, as
   cross-entropy's (N, C) and (N,);
3. the ``batch_size`` of a DataLoader that the calling frames hold;
4. the ``batch_first`` of those modules, read from the module tree before the first forward: all of
   them sequence-first put the batch at dimension 1 of an input of rank 2 or more;
5. dimension 0.

1 to 3 give a size: the batch is the input's dimension of that size (where several have it, the
one 4 prefers, else the first). 1 and 2 come during and after the first call, which starts with
what 3 to 5 say; when they move the batch, the call's description is corrected
(:mod:`memprof.collect.batch_probe` watches the call). Later calls read ``shape[dim]``:
:func:`batch_size_of` costs a dict lookup more than dimension 0 did.

Known limitations:
- A 1-D floating-point input is taken as one unbatched sample: a model fed a batch of scalars as
  a vector gets no batch size (and no batch-size advice).
- The global pre-hook sees positional arguments only: a layout module called with keywords only
  tells nothing (its batch_first still counts, statically).
- A loss seen after another model's call started (two models, one loss) is not seen.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch
from torch import nn

from memprof.collect.census import release_locals_snapshot
from memprof.collect.leaves import first_tensor, map_leaves, tensors
from memprof.collect.sites import user_frames
from memprof.model.run import CallInputs, TensorSpec

_CELLS = (nn.RNNCellBase,)


@dataclass
class BatchedCall(CallInputs):
    """A root call described, with the dimension of its first tensor input that is the batch."""

    batch_dim: int = 0
    batch_source: str = ""  # what said so, for the advisor's figures


def layout_flag(module: nn.Module) -> bool | None:
    """``batch_first`` of a module that reads (sequence, batch, ...) or (batch, sequence, ...)
    tensors (RNNs, attention, transformer layers); None for any other."""
    flag = module.__dict__.get("batch_first")
    if isinstance(flag, bool):
        return flag
    attn = module.__dict__.get("_modules", {}).get("self_attn")
    flag = getattr(attn, "batch_first", None) if attn is not None else None
    return flag if isinstance(flag, bool) else None


def shape_of(t: torch.Tensor) -> tuple[int, ...] | None:
    try:
        return tuple(int(d) for d in t.shape)
    except (RuntimeError, NotImplementedError, TypeError):  # nested tensors
        return None


def reads(module: nn.Module, args: tuple[Any, ...]) -> tuple[int, str] | None:
    """(batch size, why) that ``module`` reads from its first argument, when it is a layout module
    or a recurrent cell; None when unbatched or not a tensor (a PackedSequence)."""
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor):
        return None
    shape = shape_of(x)
    if shape is None:
        return None
    name = type(module).__name__
    if isinstance(module, _CELLS):
        return (shape[0], f"nn.{name} reads {shape}: (batch, features)") if len(shape) == 2 else None
    flag = layout_flag(module)
    if flag is None or len(shape) != 3:
        return None
    return shape[0 if flag else 1], f"{name}(batch_first={flag}) reads {shape}"


def shared_size(inp: Any, target: Any) -> int | None:
    """The one size a loss's input and target share (cross-entropy's N of (N, C) and (N,), CTC's N
    of (T, N, C) and (N, S)); None when they share none, several, or all (same shapes of rank 2+)."""
    if not isinstance(inp, torch.Tensor) or not isinstance(target, torch.Tensor):
        return None
    a, b = shape_of(inp), shape_of(target)
    if not a or not b:
        return None
    if a == b:
        return a[0] if len(a) == 1 else None
    common = set(a) & set(b)
    return common.pop() if len(common) == 1 else None


def leaf_batch_dim(shape: tuple[int, ...], b: int | None, preferred: int = 0) -> int | None:
    """The dimension of ``shape`` that is a batch of ``b``: ``preferred`` when it has that size,
    else the first that has; None when none has (the tensor does not follow the batch)."""
    if not b or not shape:
        return None
    if preferred < len(shape) and shape[preferred] == b:
        return preferred
    for d, n in enumerate(shape):
        if n == b:
            return d
    return None


class RootBatch:
    """Where one root module's batch is, by rank of its first tensor input, and what says so."""

    def __init__(self, module: nn.Module) -> None:
        self.ref = weakref.ref(module)
        flags: dict[bool, str] = {}
        self.layout_ids: set[int] = set()
        for sub in module.modules():
            flag = layout_flag(sub)
            if flag is not None:
                self.layout_ids.add(id(sub))
                flags.setdefault(flag, f"{type(sub).__name__}(batch_first={flag})")
            elif isinstance(sub, _CELLS):
                self.layout_ids.add(id(sub))
        # sequence-first modules only: the batch is dimension 1 of an input of rank 2 or more
        self.preferred = 1 if flags and not flags.get(True) else 0
        self.layout = flags.get(False, "") if self.preferred else ""
        self.seen: list[tuple[int, str]] = []  # what the layout modules read
        self.loss: list[tuple[int, str]] = []  # what the loss's input and target share
        self.loaders: list[tuple[int, str]] | None = None  # DataLoaders' batch sizes (None: not looked)
        self.dims: dict[int, int] = {}  # rank of the first tensor input -> its batch dimension
        self.sources: dict[int, str] = {}
        self.probes: dict[int, int] = {}  # rank -> probes that learnt nothing
        self.settled: set[int] = set()  # ranks a probe learnt from: not probed again
        self.version = 0

    def resolve(self, shape: tuple[int, ...]) -> tuple[int, str]:
        """(the batch dimension of a first input of this shape, why)."""
        n = len(shape)
        preferred = self.preferred if n >= 2 else 0
        for size, why in (*self.seen, *self.loss, *(self.loaders or ())):
            d = leaf_batch_dim(shape, size, preferred)
            if d is not None:
                return d, why
        if preferred:
            return preferred, self.layout
        return 0, "dimension 0"

    def settle(self, shape: tuple[int, ...]) -> int:
        """Decide (again) the batch dimension for ``shape``'s rank; returns it."""
        d, why = self.resolve(shape)
        n = len(shape)
        if self.dims.get(n, d) != d:  # moved: descriptions made before are stale
            self.version += 1
        self.dims[n] = d
        self.sources[n] = why
        return d


_ROOTS: dict[int, RootBatch] = {}  # id(root module) -> its batch
_last: list[RootBatch | None] = [None]  # the root of the last model call described


def _forget(key: int) -> Callable[[Any], None]:
    def gone(_ref: Any) -> None:
        loc = _ROOTS.get(key)
        if loc is not None and loc.ref() is None:
            del _ROOTS[key]

    return gone


def root_batch(module: nn.Module) -> RootBatch:
    """The module's :class:`RootBatch`, made at its first call (a walk of its tree)."""
    key = id(module)
    loc = _ROOTS.get(key)
    if loc is None or loc.ref() is not module:
        loc = _ROOTS[key] = RootBatch(module)
        weakref.finalize(module, _forget(key), None)
    return loc


def unbatched(t: torch.Tensor) -> bool:
    """A single sample: one vector of floating-point features (an RL policy's state, ``nn.Linear``
    and the RNN cells read a 1-D input as unbatched). A 1-D integer input (token ids) is a batch."""
    return t.dim() == 1 and t.is_floating_point()


def batch_size_of(args: tuple[Any, ...], kwargs: dict[str, Any] | None = None,
                  module: nn.Module | None = None) -> int | None:
    """The batch size of a call of ``module`` (None: the last model described): its first tensor
    input's size along the batch dimension decided for that model and rank (:func:`locate`)."""
    # The common call, model(x): no walk of the arguments (this runs at every watched step).
    t = args[0] if args and type(args[0]) is torch.Tensor else first_tensor(args, depth=3)
    if t is None and kwargs:
        t = first_tensor(kwargs, depth=3)
    if t is None:
        return None
    shape = t.shape  # a torch.Size: its entries are ints
    n = len(shape)
    if n == 0 or (n == 1 and unbatched(t)):
        return None
    loc = _last[0] if module is None else _ROOTS.get(id(module))
    if loc is None:
        return shape[0]
    d = loc.dims.get(n)
    if d is None:
        d = loc.preferred if n > loc.preferred else 0
    return shape[d]


_SIMPLE = (type(None), bool, int, float, str)
_PLAIN = (torch.Tensor, nn.Parameter)


def _describe(obj: Any) -> tuple[Any, bool]:
    """``obj`` with every tensor replaced by a :class:`TensorSpec`; False when something can't be
    (an object, a container nested deeper than 3 or longer than 64, a subclass of one)."""
    complete = True

    def spec(leaf: Any) -> Any:
        nonlocal complete
        if isinstance(leaf, torch.Tensor):
            return TensorSpec(tuple(leaf.shape), leaf.dtype, str(leaf.device), leaf.requires_grad)
        if isinstance(leaf, _SIMPLE) or isinstance(leaf, (torch.dtype, torch.device)):
            return leaf
        complete = False
        return None

    described = map_leaves(obj, spec, depth=3, max_items=64, exact=True)
    return described, complete


def call_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> BatchedCall:
    """What ``module`` is called with, described (shapes and dtypes), for the advisor's replay, with
    its batch (decided for this model once per rank of its first tensor input: :func:`locate`)."""
    a, ok_a = _describe(tuple(args))
    k, ok_k = _describe(dict(kwargs or {}))
    first, loc = locate(module, args, kwargs)
    dim, why, size = 0, "", None
    if first is not None and first.dim() > 0 and not unbatched(first):
        n = first.dim()
        dim = loc.dims.get(n, 0)
        why = loc.sources.get(n, "")
        size = int(first.shape[dim])
    return BatchedCall(
        module=weakref.ref(module), args=a, kwargs=k, batch_size=size,
        training=module.training, grad_enabled=torch.is_grad_enabled(),
        autocast=torch.is_autocast_enabled() or torch.is_autocast_enabled("cpu"), complete=ok_a and ok_k,
        batch_dim=dim, batch_source=why,
    )


def _signature(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What :func:`call_inputs` depends on, for a call of tensors only; None for any other call."""
    if kwargs:
        return None
    loc = _ROOTS.get(id(module))
    sig: list[Any] = [module.training, torch.is_autocast_enabled(), torch.is_autocast_enabled("cpu"),
                      loc.version if loc is not None else 0]
    for a in args:
        if type(a) not in _PLAIN:
            return None
        sig.append((a.shape, a.dtype, a.device, a.requires_grad))
    return tuple(sig)


def _loader_sizes(frames: list[FrameType]) -> list[tuple[int, str]]:
    """Batch sizes of the DataLoaders the user's frames hold: their locals, their globals, and the
    attributes of what the locals hold (``self.train_loader``)."""
    from torch.utils.data import DataLoader

    out: list[tuple[int, str]] = []
    seen: set[int] = set()

    def size_of(obj: Any) -> int | None:
        if isinstance(obj, DataLoader):
            b = obj.batch_size
            if b is None:
                b = getattr(obj.batch_sampler, "batch_size", None)
            return b if isinstance(b, int) and b > 0 else None
        return None

    def look(values: Any, where: str, deeper: bool) -> None:
        for name, v in list(values):
            if id(v) in seen or isinstance(v, (torch.Tensor, nn.Module, int, float, str, type(None))):
                continue
            seen.add(id(v))
            b = size_of(v)
            if b is not None:
                if all(b != s for s, _ in out):
                    out.append((b, f"DataLoader {where}{name}: batch_size={b}"))
            elif deeper:
                attrs = getattr(v, "__dict__", None)
                if isinstance(attrs, dict) and len(attrs) <= 256:
                    look(attrs.items(), f"{where}{name}.", False)

    globs: set[int] = set()
    for f in frames:
        items = list(f.f_locals.items())
        release_locals_snapshot(f)  # the snapshot would keep the frame's old values alive
        look(items, "", True)
        del items
        if id(f.f_globals) not in globs:
            globs.add(id(f.f_globals))
            if len(f.f_globals) <= 4096:
                look(f.f_globals.items(), "", False)
    return out


def locate(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
           frame: FrameType | None = None) -> tuple[torch.Tensor | None, RootBatch]:
    """The call's first tensor input and the root's batch, decided for its rank if not yet."""
    t = first_tensor(args, depth=3)
    if t is None and kwargs:
        t = first_tensor(kwargs, depth=3)
    loc = root_batch(module)
    _last[0] = loc
    if t is not None and t.dim() > 0 and t.dim() not in loc.dims:
        shape = shape_of(t)
        if shape is not None:
            if loc.loaders is None:
                try:
                    loc.loaders = _loader_sizes(user_frames(frame or sys._getframe(1), limit=8))
                except Exception:
                    loc.loaders = []
            loc.settle(shape)
    return t, loc


def input_storages(args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> set[int]:
    """Storage keys of the call's tensor inputs that are batches of their own, not views into a
    larger storage (a slice of a data set batchified before the loop is not the batch)."""
    out: set[int] = set()
    for t in tensors((args, kwargs), depth=3):
        try:
            st = t.untyped_storage()
            if st.nbytes() <= t.numel() * t.element_size():
                out.add(st._cdata)
        except (RuntimeError, NotImplementedError):
            continue
    return out
