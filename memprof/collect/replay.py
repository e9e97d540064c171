"""The advisor's replays of the training step, made while the model is alive: which model, which
optimizers and which blocks to checkpoint, and the replays of the step as the run did it, under
autocast and with those blocks checkpointed (:mod:`memprof.collect.replay_step` replays one).

Known limitations:
- How the loop zeroes gradients is read in the user's source (``zero_grad(set_to_none=False)``),
  not observed: a call hidden behind a helper in another file is not seen.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import re
import time
import tokenize
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from memprof.collect.replay_step import ReplayResult, replay
from memprof.model.run import CallInputs


def _activation_bytes(stats: Sequence[Any]) -> dict[int, int]:
    return {int(getattr(s, "module_id", 0)): int(getattr(s, "activation_bytes", 0)) for s in stats}


def choose_blocks(model: nn.Module, stats: Sequence[Any], limit: int = 64) -> list[tuple[str, int]]:
    """(qualified name in ``model``, activation bytes) of the modules worth checkpointing: the
    repeated blocks of a container (the layers of a ``ModuleList``/``Sequential``, siblings of one
    type) that saved the most; without such blocks, the largest saver below the model that has
    submodules of its own (a leaf alone recomputes nothing worth it)."""
    act = _activation_bytes(stats)
    best: list[tuple[str, int]] = []
    best_total = 0
    for parent_name, parent in model.named_modules():
        if not isinstance(parent, (nn.ModuleList, nn.Sequential)):
            continue
        groups: dict[type, list[tuple[str, int]]] = {}
        for name, child in parent.named_children():
            if next(child.children(), None) is None:
                continue  # a leaf (Linear, ReLU): checkpointing it alone saves little
            groups.setdefault(type(child), []).append(
                (f"{parent_name}.{name}" if parent_name else name, act.get(id(child), 0)))
        for members in groups.values():
            total = sum(n for _, n in members)
            if len(members) >= 2 and total > best_total:
                best, best_total = members, total
    if best:
        return [(n, b) for n, b in best if b > 0][:limit]
    inner = [(name, act.get(id(m), 0)) for name, m in model.named_modules()
             if name and next(m.children(), None) is not None]
    inner = [(n, b) for n, b in inner if b > 0]
    return [max(inner, key=lambda nb: nb[1])] if inner else []


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
        call = dataclasses.replace(call, module=weakref.ref(model))  # its batch dimension kept
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
