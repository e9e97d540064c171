"""Replaying a model's training step under fake tensors: its memory at any batch size, in any
precision, with any module checkpointed, without allocating a byte.

The run itself measures the real step exactly at the batch size it ran (the frontier the advisor's
batch model rests on). What it can't measure is a step it never completed (an out-of-memory at the
first step) or a variant it never ran (autocast, checkpointing). For those the model is called
again, while it lives, on ``FakeTensorMode`` tensors: the same Python code, the same kernels'
shape rules and dtype rules (autocast included), but meta storage. A dispatch mode counts live
storage bytes as :class:`memprof.collect.storage.StorageTracker` does, and marks each storage that
follows the batch, so one replay gives the whole line ``peak(b) = max(fixed + scaled * b / b_replay)``.
The batch size replayed is a prime that is no dimension of any parameter or input, so that
"follows the batch" can't be a coincidence. :mod:`memprof.collect.replay` chooses what to replay.

What the replay can't know is replaced by a stand-in: the loss (the model's own ``loss`` output if
it has one, else cross-entropy on its output, else a sum) and the data pipeline (only the model's
inputs are made). The advisor uses replays as ratios against the measured run where it can.

A storage an op makes from one that follows the batch follows it too (unless it has a parameter's
number of elements), as in the run's trackers: flat bytes whose shape does not show the batch.

Known limitations:
- An optimizer whose step needs a closure (LBFGS) is not stepped in the replay: its state (the
  history) is what the run measured, not replayed.
- Fake kernels allocate no workspace where the real ones do (``mkldnn_rnn_layer``'s, an LSTM's on
  CPU, is empty): the replay sees less than the run. The advisor only lets it lower a suggestion.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from memprof.collect.batch import leaf_batch_dim
from memprof.collect.leaves import attributes, first_tensor, leaves, map_leaves
from memprof.model.run import CallInputs, TensorSpec, frontier_from_live

_PRIMES = (61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157)


@dataclass
class ReplayResult:
    """Live bytes at each local maximum of the replayed step, as (fixed, scaled) at ``batch``."""

    batch: int
    frontier: list[tuple[int, int]]
    param_bytes: int  # parameters and buffers, counted in every point's fixed part
    input_bytes: int  # the model inputs made for the replay, at ``batch`` (scaled ones)
    steps: int = 1

    def predict(self, b: float) -> int:
        return int(max(f + s * b / self.batch for f, s in self.frontier))

    def at(self, b: float) -> tuple[int, int]:
        """The point that holds the peak at batch ``b``: (fixed, scaled) scaled to ``b``."""
        f, s = max(self.frontier, key=lambda p: p[0] + p[1] * b / self.batch)
        return f, int(s * b / self.batch)


class _Counter(TorchDispatchMode):
    """Live bytes of the storages ops create, and the share that follows the batch."""

    def __init__(self, batch: int, fixed_numels: set[int] | None = None) -> None:
        super().__init__()
        self.batch = batch
        self.fixed_numels = fixed_numels or set()  # parameters' numbers of elements: never made from the batch
        self.refs: dict[int, tuple[weakref.ref[Any], int, bool]] = {}
        self.live = 0
        self.scaled = 0
        self.rising = False
        self.peaks: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self._track(out, args)
        elif isinstance(out, (tuple, list)):
            for o in out:
                if isinstance(o, torch.Tensor):
                    self._track(o, args)
        return out

    def _derived(self, args: Any) -> bool:
        """Whether an op reads a storage that follows the batch (the run's trackers' rule: what it
        makes then follows the batch too, unless it has a parameter's number of elements)."""
        for a in args:
            for x in (a,) if isinstance(a, torch.Tensor) else a if isinstance(a, (list, tuple)) else ():
                if isinstance(x, torch.Tensor):
                    try:
                        entry = self.refs.get(id(x.untyped_storage()))
                    except (RuntimeError, NotImplementedError):
                        continue
                    if entry is not None and entry[2]:
                        return True
        return False

    def _track(self, t: torch.Tensor, args: Any = ()) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key = id(st)
        if key in self.refs:
            return
        n = st.nbytes()
        if n == 0:
            return
        shape = tuple(t.shape)
        b = self.batch
        # a prime batch size: any dimension that is a multiple of it is the batch's (merged into
        # another, as in attention's (seq, batch * heads, head_dim))
        scaled = any(d % b == 0 and d for d in shape)
        if not scaled and shape and args and math.prod(shape) not in self.fixed_numels:
            scaled = self._derived(args)
        self.refs[key] = (weakref.ref(st, self._finalizer(key)), n, scaled)
        self.live += n
        if scaled:
            self.scaled += n
        self.rising = True

    def known(self, t: torch.Tensor) -> None:
        """A storage counted elsewhere (parameters, buffers): in-place ops on it are no new storage."""
        st = t.untyped_storage()
        key = id(st)
        self.refs.setdefault(key, (weakref.ref(st, self._finalizer(key)), 0, False))

    def _finalizer(self, key: int) -> Callable[[Any], None]:
        def gone(_ref: Any) -> None:
            self._free(key)

        return gone

    def _free(self, key: int) -> None:
        entry = self.refs.pop(key, None)
        if entry is None:
            return
        if self.rising:
            self.rising = False
            self.peaks.append((self.live, self.scaled))
        _, n, scaled = entry
        self.live -= n
        if scaled:
            self.scaled -= n

    def points(self, base: int) -> list[tuple[int, int]]:
        return frontier_from_live([(base + live, scaled) for live, scaled in [*self.peaks, (self.live, self.scaled)]])


def pick_batch(module: nn.Module, call: CallInputs) -> int:
    """A prime that is no dimension of a parameter, buffer or input (nor divides a leading one)."""
    dims: set[int] = set()
    for t in [*module.parameters(), *module.buffers()]:
        dims.update(int(d) for d in t.shape)
    preferred = batch_dim_of(call)
    for spec in leaves((call.args, call.kwargs)):
        if isinstance(spec, TensorSpec):
            d = leaf_batch_dim(spec.shape, call.batch_size, preferred)  # the batch is replaced
            dims.update(int(n) for i, n in enumerate(spec.shape) if i != d)
    for p in _PRIMES:
        if all(d != p and (d < p or d % p) for d in dims):
            return p
    return _PRIMES[-1]


def batch_dim_of(call: CallInputs) -> int:
    """The batch dimension of the call's first tensor input (0 for a call described without one)."""
    return int(getattr(call, "batch_dim", 0) or 0)


def _make_inputs(obj: Any, b0: int | None, b: int, preferred: int = 0) -> Any:
    """The call's arguments with a tensor for each spec, at batch ``b`` where it was at ``b0``:
    along ``preferred`` (the first input's batch dimension) where that dimension is ``b0``, else
    along the first that is ((layers, batch, hidden) states beside (batch, sequence) ids)."""

    def make(spec: Any) -> Any:
        if not isinstance(spec, TensorSpec):
            return spec
        shape = list(spec.shape)
        d = leaf_batch_dim(spec.shape, b0, preferred)
        if d is not None:
            shape[d] = b
        t = torch.empty(shape, dtype=spec.dtype, device=spec.device)
        if spec.requires_grad and t.is_floating_point():
            t.requires_grad_(True)
        return t

    return map_leaves(obj, make)


def _wants_grad(t: torch.Tensor) -> bool:
    return t.requires_grad and t.is_floating_point()


def stand_in_loss(out: Any) -> torch.Tensor | None:
    """The model's own loss when it returns one (``out.loss``, ``out["loss"]``), else cross-entropy
    on its output (classes on the last dimension of 2-d and 3-d outputs, on dimension 1 above),
    else a sum."""
    own = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    if isinstance(own, torch.Tensor) and own.numel() == 1 and own.requires_grad:
        return own
    t = first_tensor(out, _wants_grad, depth=3, items=attributes)
    if t is None:
        return None
    if t.dim() == 2:
        return nn.functional.cross_entropy(t, torch.zeros(t.shape[0], dtype=torch.long, device=t.device))
    if t.dim() == 3:
        flat = t.flatten(0, 1)
        return nn.functional.cross_entropy(flat, torch.zeros(flat.shape[0], dtype=torch.long, device=t.device))
    if t.dim() > 3:
        target = torch.zeros((t.shape[0], *t.shape[2:]), dtype=torch.long, device=t.device)
        return nn.functional.cross_entropy(t, target)
    return t.sum()


def needs_closure(opt: torch.optim.Optimizer) -> bool:
    """Whether the optimizer's ``step`` must be given a closure (LBFGS): it reads the loss's value
    (``float(closure())``), which fake tensors do not have, so its step is not replayed."""
    try:
        closure = inspect.signature(type(opt).step).parameters.get("closure")
    except (TypeError, ValueError):
        return False
    return closure is not None and closure.default is inspect.Parameter.empty


def _fake_optimizer(opt: torch.optim.Optimizer, fakes: dict[int, torch.Tensor]) -> torch.optim.Optimizer | None:
    if needs_closure(opt):
        return None
    groups = []
    for g in opt.param_groups:
        params = [fakes[id(p)] for p in g["params"] if id(p) in fakes]
        if params:
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": params})
    if not groups:
        return None
    cls = type(opt)
    try:
        accepted = set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        accepted = set()
    defaults = {k: v for k, v in opt.defaults.items() if k in accepted}
    return cls(groups, **defaults)


@contextlib.contextmanager
def _checkpointed(module: nn.Module, names: Sequence[str]) -> Iterator[None]:
    from torch.utils.checkpoint import checkpoint

    patched: list[nn.Module] = []
    try:
        for name in names:
            sub = module.get_submodule(name)
            forward = sub.forward

            def wrapped(*args: Any, _f: Any = forward, **kwargs: Any) -> Any:
                return checkpoint(_f, *args, use_reentrant=False, **kwargs)

            sub.forward = wrapped  # type: ignore[method-assign]
            patched.append(sub)
        yield
    finally:
        for sub in patched:
            try:
                del sub.forward
            except AttributeError:
                pass


@contextlib.contextmanager
def _training(module: nn.Module, mode: bool) -> Iterator[None]:
    flags = [(m, m.training) for m in module.modules()]
    module.train(mode)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _storage_bytes(tensors: Sequence[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        try:
            st = t.untyped_storage()
            seen[id(st)] = st.nbytes()
        except (RuntimeError, NotImplementedError):
            continue
    return sum(seen.values())


def fake_state(mode: Any, named: list[tuple[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
    """The module's parameters and buffers as fake tensors of ``mode``: by name, and by the real
    tensor's id (a tensor shared under two names is one fake); trainable parameters stay trainable."""
    fakes: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for name, t in named:
        f = fakes.get(id(t))
        if f is None:
            f = fakes[id(t)] = mode.from_tensor(t)
            if isinstance(t, nn.Parameter) and t.requires_grad and not f.requires_grad:
                f.requires_grad_(True)
        state[name] = f
    return state, fakes


def replay(
    call: CallInputs,
    optimizers: Sequence[torch.optim.Optimizer] = (),
    *,
    batch: int | None = None,
    amp: torch.dtype | None = None,
    checkpoint: Sequence[str] = (),
    steps: int | None = None,
    keep_grads: bool = False,
) -> ReplayResult:
    """Run the call's module ``steps`` times (forward, stand-in loss, backward, optimizer step) on
    fake tensors at batch ``batch`` (default: a prime, see :func:`pick_batch`); ``keep_grads``: the
    loop zeroes gradients in place (``zero_grad(set_to_none=False)``). ``steps`` defaults to two
    where the first step leaves state behind (an optimizer stepped, gradients kept), else one.
    Raises on failure."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.func import functional_call

    module = call.module() if callable(call.module) else None
    if not isinstance(module, nn.Module):
        raise RuntimeError("the model is gone")
    if not call.complete:
        raise RuntimeError("the model's inputs could not be described")
    b = batch or pick_batch(module, call)
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    base = _storage_bytes([*params.values(), *buffers.values()])
    train = call.grad_enabled and any(p.requires_grad for p in params.values())
    device_type = next((p.device.type for p in params.values()), "cpu")
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    state, fakes = fake_state(mode, [*params.items(), *buffers.items()])
    counter = _Counter(b, {t.numel() for t in [*params.values(), *buffers.values()]})
    for f in fakes.values():
        counter.known(f)
    input_bytes = 0
    rng_devices = [next(p.device.index or 0 for p in params.values())] if device_type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), _training(module, call.training), _checkpointed(module, checkpoint):
        with mode:
            twins = [o for o in (_fake_optimizer(opt, fakes) for opt in optimizers) if o is not None] if train else []
            # A second step where the first leaves state the second's peak has: an optimizer's (its
            # state), or gradients zeroed in place (alive through the forward). Else (no optimizer,
            # or one not replayed: LBFGS) the second step is the first again, at the same cost.
            n_steps = steps if steps is not None else (2 if train and (twins or keep_grads) else 1)
            with counter:
                args = _make_inputs(call.args, call.batch_size, b, batch_dim_of(call))
                kwargs = _make_inputs(call.kwargs, call.batch_size, b, batch_dim_of(call))
                input_bytes = counter.scaled
                for _ in range(n_steps):
                    for opt in twins:
                        opt.zero_grad(set_to_none=not keep_grads)
                    with torch.set_grad_enabled(call.grad_enabled):
                        with torch.autocast(device_type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                            out = functional_call(module, state, tuple(args), kwargs)
                            loss = stand_in_loss(out) if train else None
                        if loss is not None:
                            loss.backward()
                    del out, loss
                    for opt in twins:
                        opt.step()
                points = counter.points(base)
                del args, kwargs, twins
    return ReplayResult(batch=b, frontier=points, param_bytes=base, input_bytes=input_bytes, steps=n_steps)
