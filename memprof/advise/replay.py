"""Replaying a model's training step under fake tensors: its memory at any batch size, in any
precision, with any module checkpointed, without allocating a byte.

The run itself measures the real step exactly at the batch size it ran (the frontier, see
:mod:`memprof.advise.batch_size`). What it can't measure is a step it never completed (an
out-of-memory at the first step) or a variant it never ran (autocast, checkpointing). For those
the advisor calls the model again, after the run, on ``FakeTensorMode`` tensors: the same Python
code, the same kernels' shape rules and dtype rules (autocast included), but meta storage. A
dispatch mode counts live storage bytes as :class:`memprof.collect.storage.StorageTracker` does,
and marks each storage that follows the batch, so one replay gives the whole line
``peak(b) = max(fixed + scaled * b / b_replay)``. The batch size replayed is a prime that is no
dimension of any parameter or input, so that "follows the batch" can't be a coincidence.

What the replay can't know is replaced by a stand-in: the loss (the model's own ``loss`` output if
it has one, else cross-entropy on its output, else a sum) and the data pipeline (only the model's
inputs are made). The advisor uses replays as ratios against the measured run where it can.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import io
import re
import time
import tokenize
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from memprof.collect.timeline import CallInputs, TensorSpec, frontier_from_live

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

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch
        self.refs: dict[int, tuple[weakref.ref[Any], int, bool]] = {}
        self.live = 0
        self.scaled = 0
        self.rising = False
        self.peaks: list[tuple[int, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self._track(out)
        elif isinstance(out, (tuple, list)):
            for o in out:
                if isinstance(o, torch.Tensor):
                    self._track(o)
        return out

    def _track(self, t: torch.Tensor) -> None:
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


def _leaves(obj: Any) -> Iterator[Any]:
    if isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _leaves(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _leaves(o)
    else:
        yield obj


def pick_batch(module: nn.Module, call: CallInputs) -> int:
    """A prime that is no dimension of a parameter, buffer or input (nor divides a leading one)."""
    dims: set[int] = set()
    for t in [*module.parameters(), *module.buffers()]:
        dims.update(int(d) for d in t.shape)
    for spec in _leaves((call.args, call.kwargs)):
        if isinstance(spec, TensorSpec):
            shape = spec.shape[1:] if call.batch_size and spec.shape[:1] == (call.batch_size,) else spec.shape
            dims.update(int(d) for d in shape)
    for p in _PRIMES:
        if all(d != p and (d < p or d % p) for d in dims):
            return p
    return _PRIMES[-1]


def _make_inputs(obj: Any, b0: int | None, b: int) -> Any:
    if isinstance(obj, TensorSpec):
        shape = list(obj.shape)
        if b0 and shape and shape[0] == b0:
            shape[0] = b
        t = torch.empty(shape, dtype=obj.dtype, device=obj.device)
        if obj.requires_grad and t.is_floating_point():
            t.requires_grad_(True)
        return t
    if isinstance(obj, (list, tuple)):
        return type(obj)(_make_inputs(o, b0, b) for o in obj)
    if isinstance(obj, dict):
        return {k: _make_inputs(v, b0, b) for k, v in obj.items()}
    return obj


def _first_grad_tensor(obj: Any, depth: int = 0) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj if obj.requires_grad and obj.is_floating_point() else None
    if depth > 2:
        return None
    if isinstance(obj, dict):
        items: Any = obj.values()
    elif isinstance(obj, (list, tuple)):
        items = obj
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return None
    for o in items:
        t = _first_grad_tensor(o, depth + 1)
        if t is not None:
            return t
    return None


def stand_in_loss(out: Any) -> torch.Tensor | None:
    """The model's own loss when it returns one (``out.loss``, ``out["loss"]``), else cross-entropy
    on its output (classes on the last dimension of 2-d and 3-d outputs, on dimension 1 above),
    else a sum."""
    own = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    if isinstance(own, torch.Tensor) and own.numel() == 1 and own.requires_grad:
        return own
    t = _first_grad_tensor(out)
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


def _fake_optimizer(opt: torch.optim.Optimizer, fakes: dict[int, torch.Tensor]) -> torch.optim.Optimizer | None:
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
    loop zeroes gradients in place (``zero_grad(set_to_none=False)``). Raises on failure."""
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
    n_steps = steps if steps is not None else (2 if train and optimizers else 1)
    device_type = next((p.device.type for p in params.values()), "cpu")
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fakes: dict[int, torch.Tensor] = {}
    state: dict[str, torch.Tensor] = {}
    for name, t in [*params.items(), *buffers.items()]:
        f = fakes.get(id(t))
        if f is None:
            f = fakes[id(t)] = mode.from_tensor(t)
            if isinstance(t, nn.Parameter) and t.requires_grad and not f.requires_grad:
                f.requires_grad_(True)
        state[name] = f
    counter = _Counter(b)
    for f in fakes.values():
        counter.known(f)
    input_bytes = 0
    rng_devices = [next(p.device.index or 0 for p in params.values())] if device_type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices), _training(module, call.training), _checkpointed(module, checkpoint):
        with mode:
            twins = [o for o in (_fake_optimizer(opt, fakes) for opt in optimizers) if o is not None] if train else []
            with counter:
                args = _make_inputs(call.args, call.batch_size, b)
                kwargs = _make_inputs(call.kwargs, call.batch_size, b)
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


def main_call(calls: Sequence[CallInputs]) -> CallInputs | None:
    """The call of the model with the most parameters (the model being trained, not a helper)."""
    best: tuple[int, CallInputs] | None = None
    for c in calls:
        m = c.module() if callable(c.module) else None
        if not isinstance(m, nn.Module):
            continue
        n = sum(p.numel() for p in m.parameters())
        if best is None or n > best[0]:
            best = (n, c)
    return best[1] if best else None


_MODULE_HOOKS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
                 "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks")


@contextlib.contextmanager
def isolated(module: nn.Module) -> Iterator[None]:
    """Run a replay as if nobody watched: no dispatch modes (memprof's tracker, the user's), no
    module or optimizer hooks (memprof's, the user's: they must not see fake tensors), and every
    attribute a forward sets on a module (a cache, a kept tensor) put back afterwards."""
    from torch.nn.modules import module as mm
    from torch.optim import optimizer as om
    from torch.utils._python_dispatch import _disable_current_modes

    swapped: list[tuple[Any, str, Any]] = []
    for owner, names in ((mm, [n for n in dir(mm) if n.startswith("_global_") and n.endswith("hooks")]),
                         (om, ["_global_optimizer_pre_hooks", "_global_optimizer_post_hooks"])):
        for name in names:
            value = getattr(owner, name, None)
            if isinstance(value, dict):
                swapped.append((owner, name, value))
                setattr(owner, name, collections.OrderedDict())
    saved: list[tuple[nn.Module, dict[str, Any], list[tuple[dict[str, Any], dict[str, Any]]]]] = []
    for m in module.modules():
        inner = [(d, dict(d)) for d in (m._parameters, m._buffers, m._modules)]
        saved.append((m, dict(m.__dict__), inner))
        for name in _MODULE_HOOKS:
            if isinstance(m.__dict__.get(name), dict):
                m.__dict__[name] = collections.OrderedDict()
    try:
        with _disable_current_modes():
            yield
    finally:
        for m, attrs, inner in saved:
            m.__dict__.clear()
            m.__dict__.update(attrs)
            for d, items in inner:
                d.clear()
                d.update(items)  # type: ignore[arg-type]
        for owner, name, value in swapped:
            setattr(owner, name, value)


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside ``torch.compile`` and data-parallel wrappers (their forward can't be faked)."""
    for _ in range(4):
        inner = getattr(module, "_orig_mod", None)
        if isinstance(inner, nn.Module):
            module = inner
            continue
        if type(module).__name__ in ("DistributedDataParallel", "DataParallel", "FullyShardedDataParallel"):
            inner = getattr(module, "module", None)
            if isinstance(inner, nn.Module):
                module = inner
                continue
        break
    return module


@dataclass
class ReplaySet:
    """The replays the advisor reads, made while the model was alive."""

    call: CallInputs | None = None
    base: ReplayResult | None = None  # the step as the run did it (fp32 unless it used autocast)
    amp: ReplayResult | None = None  # the same step under autocast
    amp_dtype: str = ""
    checkpoint: ReplayResult | None = None  # the same step with ``checkpoint_names`` checkpointed
    checkpoint_names: list[str] = field(default_factory=list)
    checkpoint_activation_bytes: int = 0  # what those modules saved for backward in the run
    checkpoint_labels: list[str] = field(default_factory=list)  # the same modules as the report names them
    checkpoint_types: list[str] = field(default_factory=list)
    keep_grads: bool = False  # the loop zeroes gradients in place (read in its source)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


_IN_PLACE_ZERO = re.compile(r"\.zero_grad\((set_to_none=)?False\)")


def _code_only(text: str) -> str:
    """The code of a Python source without its strings, comments and spaces."""
    out: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.NAME, tokenize.OP, tokenize.NUMBER):
                out.append(tok.string)
    except (tokenize.TokenError, SyntaxError):
        return ""
    return "".join(out)


def zeroes_grads_in_place(paths: Sequence[str]) -> bool:
    """Whether the user's code calls ``.zero_grad(set_to_none=False)``: gradients then live through
    the forward pass, which a replay (or a first step that died) can't see."""
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read(2_000_000)
        except OSError:
            continue
        if "zero_grad" in text and _IN_PLACE_ZERO.search(_code_only(text)):
            return True
    return False


def make_replays(
    calls: Sequence[CallInputs], optimizers: Sequence[torch.optim.Optimizer], stats: Sequence[Any] = (),
    variants: bool = True,
    sources: Sequence[str] = (),
) -> ReplaySet:
    """The base replay of the main model's training step and, with ``variants``, its autocast and
    checkpointed variants. ``sources``: the user's files, read for how the loop zeroes gradients.
    Never raises: what fails is noted in ``errors``."""
    t0 = time.perf_counter()
    out = ReplaySet()
    out.keep_grads = keep = zeroes_grads_in_place(sources)
    training = [c for c in calls if c.grad_enabled]
    call = main_call(training) or main_call(calls)
    if call is None:
        out.errors.append("no model call was recorded")
        return out
    root = call.module() if callable(call.module) else None
    if not isinstance(root, nn.Module):
        out.errors.append("the model no longer exists")
        return out
    model = unwrap(root)
    if model is not root:
        call = CallInputs(module=weakref.ref(model), args=call.args, kwargs=call.kwargs, batch_size=call.batch_size,
                          training=call.training, grad_enabled=call.grad_enabled, autocast=call.autocast,
                          complete=call.complete)
    out.call = call
    params = {id(p) for p in model.parameters()}
    opts = [o for o in optimizers if any(id(p) in params for g in o.param_groups for p in g["params"])]
    device = next((p.device.type for p in model.parameters()), "cpu")
    amp_dtype = torch.bfloat16 if device == "cpu" else torch.float16
    with isolated(model):
        try:
            out.base = replay(call, opts, amp=amp_dtype if call.autocast else None, keep_grads=keep)
        except Exception as e:
            out.errors.append(f"replay: {type(e).__name__}: {e}"[:300])
            return out
        if not variants:
            out.seconds = time.perf_counter() - t0
            return out
        if not call.autocast:
            try:
                out.amp = replay(call, opts, batch=out.base.batch, amp=amp_dtype, keep_grads=keep)
                out.amp_dtype = str(amp_dtype).replace("torch.", "")
            except Exception as e:
                out.errors.append(f"autocast replay: {type(e).__name__}: {e}"[:300])
        if call.grad_enabled:
            from memprof.advise.checkpointing import choose_blocks

            blocks = choose_blocks(model, stats)
            if blocks:
                out.checkpoint_names = [name for name, _ in blocks]
                out.checkpoint_activation_bytes = sum(n for _, n in blocks)
                labels = {int(getattr(st, "module_id", 0)): str(getattr(st, "name", "")) for st in stats}
                subs = [model.get_submodule(name) for name in out.checkpoint_names]
                out.checkpoint_labels = [labels.get(id(m)) or name for m, name in zip(subs, out.checkpoint_names, strict=True)]
                out.checkpoint_types = sorted({type(m).__name__ for m in subs})
                try:
                    out.checkpoint = replay(call, opts, batch=out.base.batch, checkpoint=out.checkpoint_names,
                                            amp=amp_dtype if call.autocast else None, keep_grads=keep)
                except Exception as e:
                    out.errors.append(f"checkpoint replay: {type(e).__name__}: {e}"[:300])
    out.seconds = time.perf_counter() - t0
    return out
