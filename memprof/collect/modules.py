"""Modules: who holds activations, parameters and gradients; which module calls are iterations.

Global forward pre/post hooks keep a stack of running modules (detailed steps only: global hooks
put every module call on PyTorch's slow path). Saved-tensor hooks see every tensor autograd saves
for backward; its bytes are charged, once per storage, to each module running at that moment.
Root modules (called while no other module runs) get hooks of their own that stay on in watch
mode: their calls give the batch size, and mark evaluation iterations when no optimizer steps.

Known limitations:
- The pack hook hands autograd ``t.detach()`` (autograd re-attaches the history from its own
  metadata on unpack); returning ``t`` itself would make a reference cycle that never frees.
- Activations computed outside any module (a loss function on logits) are counted in the
  breakdown but not charged to a module.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from memprof.collect.leaves import first_tensor, map_leaves, tensors
from memprof.collect.sites import user_frame
from memprof.collect.storage import StorageTracker
from memprof.model.categories import PARAMETERS
from memprof.model.run import CallInputs, TensorSpec

if TYPE_CHECKING:
    from memprof.collect.native import NativeTracker

_PLAIN = (torch.Tensor, nn.Parameter)


def _subtree_gradient_bytes(root: nn.Module, totals: dict[int, int]) -> bool:
    """``totals[id(m)]``: the gradient bytes of every module ``m`` in ``root``'s tree, in one walk
    (``m.parameters()`` per module walks each subtree again: quadratic in the depth). False when a
    module or a parameter appears twice in the tree, where sums would count it twice."""
    seen_modules: set[int] = set()
    seen_params: set[int] = set()
    order: list[nn.Module] = []
    stack = [root]
    while stack:
        m = stack.pop()
        if id(m) in seen_modules:
            return False
        seen_modules.add(id(m))
        order.append(m)
        stack.extend(c for c in m._modules.values() if c is not None)
    local: dict[int, int] = {}
    for m in reversed(order):  # every module after its submodules
        total = 0
        for p in m._parameters.values():
            if p is None:
                continue
            if id(p) in seen_params:
                return False
            seen_params.add(id(p))
            g = p.grad
            if g is not None:
                total += g.untyped_storage().nbytes()
        for c in m._modules.values():
            if c is not None:
                total += local[id(c)]
        local[id(m)] = total
    totals.update(local)
    return True


@dataclass
class ModuleStats:
    name: str
    type: str
    module_id: int
    parameter_bytes: int = 0
    gradient_bytes: int = 0
    activation_bytes: int = 0  # the largest forward seen: saved-for-backward bytes, by storage
    calls: int = 0


@dataclass
class RootCall:
    """One call of a root module, as the session needs it."""

    module: nn.Module
    name: str
    batch_size: int | None
    grad_enabled: bool
    site: tuple[str, int] | None  # the user line that called the model
    call_site: tuple[int, int] = (0, 0)  # (id of the calling code, bytecode offset): the same call in a loop


def batch_size_of(args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> int | None:
    t = first_tensor(args, depth=3)
    if t is None and kwargs:
        t = first_tensor(kwargs, depth=3)
    if t is None or t.dim() == 0:
        return None
    return int(t.shape[0])


_SIMPLE = (type(None), bool, int, float, str)


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


def call_inputs(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> CallInputs:
    """What ``module`` is called with, described (shapes and dtypes), for the advisor's replay."""
    a, ok_a = _describe(tuple(args))
    k, ok_k = _describe(dict(kwargs or {}))
    return CallInputs(
        module=weakref.ref(module), args=a, kwargs=k, batch_size=batch_size_of(args, kwargs),
        training=module.training, grad_enabled=torch.is_grad_enabled(),
        autocast=torch.is_autocast_enabled() or torch.is_autocast_enabled("cpu"), complete=ok_a and ok_k,
    )


def _signature(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> tuple[Any, ...] | None:
    """What :func:`call_inputs` depends on, for a call of tensors only; None for any other call."""
    if kwargs:
        return None
    sig: list[Any] = [module.training, torch.is_autocast_enabled(), torch.is_autocast_enabled("cpu")]
    for a in args:
        if type(a) not in _PLAIN:
            return None
        sig.append((a.shape, a.dtype, a.device, a.requires_grad))
    return tuple(sig)


def call_site(frame: FrameType | None) -> tuple[int, int]:
    """Where a model is called from, to the bytecode instruction: the same line in a loop is the
    same site, two calls on one line are two."""
    return (id(frame.f_code), frame.f_lasti) if frame is not None else (0, 0)


class ModuleCollector:
    def __init__(
        self,
        tracker: StorageTracker | NativeTracker,
        on_root_call: Callable[[nn.Module, tuple[Any, ...], dict[str, Any]], RootCall | None],
        on_root_output: Callable[[RootCall, Any], None],
    ) -> None:
        self.tracker = tracker
        self.on_root_call = on_root_call
        self.on_root_output = on_root_output
        self.stats: dict[int, ModuleStats] = {}
        self.names: dict[int, str] = {}
        self.stack: list[ModuleStats] = []
        # Weak: memprof must not keep a user's model alive past its last use.
        self.roots: weakref.WeakValueDictionary[int, nn.Module] = weakref.WeakValueDictionary()
        self.modules: weakref.WeakValueDictionary[int, nn.Module] = weakref.WeakValueDictionary()
        self._root_handles: list[RemovableHandle] = []
        self._global_handles: list[RemovableHandle] = []
        self._saved_hooks: Any = None
        self._current_root: nn.Module | None = None
        self._current_call: RootCall | None = None
        self.last_inputs: dict[tuple[int, bool], CallInputs] = {}  # (id(root), grad on) -> its last call
        self._signatures: dict[tuple[int, bool], tuple[Any, ...] | None] = {}  # ... and what it depends on
        self.detail = False

    # -- detail on/off ---------------------------------------------------------------------------
    def enable_detail(self) -> None:
        if self.detail:
            return
        self.detail = True
        from torch.nn.modules import module as mm

        self._global_handles = [
            mm.register_module_forward_pre_hook(self._pre),
            mm.register_module_forward_hook(self._post, always_call=True),
        ]
        self.set_pack(True)

    def disable_detail(self) -> None:
        if not self.detail:
            return
        self.detail = False
        for h in self._global_handles:
            h.remove()
        self._global_handles = []
        self.set_pack(False)
        self.stack.clear()
        self.tracker.clear_modules()

    def close(self) -> None:
        self.disable_detail()
        for h in self._root_handles:
            h.remove()
        self._root_handles = []

    def set_pack(self, on: bool) -> None:
        """The saved-tensor hook on or off (on only with detail). At step boundaries only: the hooks
        are a stack, and a user's own saved-tensor hooks inside a step stay above memprof's."""
        on = on and self.detail
        if on == (self._saved_hooks is not None):
            return
        if on:
            self._saved_hooks = torch.autograd.graph.saved_tensors_hooks(self._pack_hook(), self._unpack)
            self._saved_hooks.__enter__()
        else:
            try:
                self._saved_hooks.__exit__(None, None, None)
            except RuntimeError:
                pass
            self._saved_hooks = None

    @property
    def packing(self) -> bool:
        """Whether the saved-tensor hook is on: each module's saved bytes are measured this step."""
        return self._saved_hooks is not None

    # -- roots -----------------------------------------------------------------------------------
    def _adopt_root(self, module: nn.Module, caller: Any) -> bool:
        """Name a top-level module's tree; a model (one with parameters) also gets root hooks."""
        prefix = self._variable_name(module, caller) or type(module).__name__
        for qual, sub in module.named_modules():
            key = id(sub)
            if key in self.names:
                continue
            name = f"{prefix}.{qual}" if qual else prefix
            self.names[key] = name
            self.modules[key] = sub
            st = self.stats[key] = ModuleStats(name=name, type=type(sub).__name__, module_id=key)
            st.parameter_bytes = sum(p.untyped_storage().nbytes() for p in sub.parameters())
        for p in module.parameters():
            self.tracker.set_category(p, PARAMETERS)
            self.tracker.add_fixed_numel(p.numel())
        for b in module.buffers():
            self.tracker.set_category(b, PARAMETERS)
        if next(module.parameters(), None) is None:
            return False  # a loss or an activation called on its own: not a model, not an iteration
        self.roots[id(module)] = module
        self._root_handles.append(module.register_forward_pre_hook(self._root_pre, with_kwargs=True))
        self._root_handles.append(module.register_forward_hook(self._root_post, always_call=True))
        return True

    @staticmethod
    def _variable_name(module: nn.Module, frame: Any) -> str | None:
        f = frame
        while f is not None:
            for k, v in f.f_locals.items():
                if v is module and not k.startswith("_"):
                    return k if k != "self" else None
            f = f.f_back
            f = user_frame(f)
        return None

    # The root hooks stay on in watch mode: keep the common path to a few attribute reads.
    def _root_pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._current_root is not None:  # a root called inside another root: not an iteration
            return
        self._current_root = module
        self._current_call = self.on_root_call(module, args, kwargs)

    def _root_post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._current_root is not module:
            return
        self._current_root = None
        call = self._current_call
        if call is not None:
            self._current_call = None
            self.on_root_output(call, output)

    def make_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> RootCall:
        """The details of a root call the session follows: who called it, with what batch."""
        frame = user_frame(sys._getframe(1))
        site = (frame.f_code.co_filename, frame.f_lineno) if frame is not None else None
        grad = torch.is_grad_enabled()
        batch = None
        try:
            described = self._describe_call(module, args, kwargs, grad)
            batch = described.batch_size
            if not self.tracker.batch_size:  # the first batch: the tracker marks it as scaling
                self.tracker.first_inputs = {t.untyped_storage()._cdata for t in tensors((args, kwargs), depth=3)}
        except Exception:
            batch = batch_size_of(args, kwargs)
        return RootCall(
            call_site=call_site(frame),
            module=module,
            name=self.names.get(id(module), type(module).__name__),
            batch_size=batch,
            grad_enabled=grad,
            site=site,
        )

    def _describe_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None,
                       grad: bool) -> CallInputs:
        """:func:`call_inputs`, kept as the module's last call. A loop calls a model with the same
        shapes again and again: when the call is plain tensors like the last one, the last
        description stands (a few attribute reads instead of describing every input anew)."""
        key = (id(module), grad)
        last = self.last_inputs.get(key)
        signature = _signature(module, args, kwargs)
        if (last is not None and signature is not None and self._signatures.get(key) == signature
                and last.module() is module):  # not a dead model's whose id was reused
            return last
        described = call_inputs(module, args, kwargs or {})
        self.last_inputs[key] = described
        self._signatures[key] = signature
        return described

    # -- global hooks (detail only) ----------------------------------------------------------------
    def _pre(self, module: nn.Module, args: Any) -> None:
        key = id(module)
        st = self.stats.get(key)
        if st is None:
            if not self.stack:
                # A module we have not seen, called at the top: a new root (adopt it, then rerun the
                # root hook by hand, since hooks added during a call don't fire for that call).
                caller = user_frame(sys._getframe(1))
                if self._adopt_root(module, caller):
                    self._root_pre(module, args if isinstance(args, tuple) else (args,), {})
                st = self.stats[key]
            else:
                parent = self.stack[-1].name
                name = f"{parent}.<{type(module).__name__}>"
                st = self.stats[key] = ModuleStats(name=name, type=type(module).__name__, module_id=key)
                self.names[key] = name
                self.modules[key] = module
        st.calls += 1
        self.stack.append(st)
        self.tracker.enter_module(key, st.name)

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack and self.stack[-1].module_id == id(module):
            self.stack.pop()
            self.tracker.leave_module()

    # -- saved tensors ---------------------------------------------------------------------------
    def _pack_hook(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The tracker's: it counts saved storages and charges them to the modules running."""
        return self.tracker.pack

    @staticmethod
    def _unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    # -- per step ----------------------------------------------------------------------------------
    def end_step(self) -> None:
        """Fold this step's saved bytes into each module's maximum."""
        stats = self.stats
        for key, n in self.tracker.take_saved_bytes().items():
            st = stats.get(key)
            if st is not None and n > st.activation_bytes:
                st.activation_bytes = n

    def record_gradients(self) -> None:
        """Each module's gradient bytes (its parameters' and its submodules'), the largest seen."""
        totals: dict[int, int] = {}
        for root in list(self.roots.values()):
            if not _subtree_gradient_bytes(root, totals):
                totals = {}  # shared weights: count module by module, as parameters() dedups them
                break
        for key, st in self.stats.items():
            total = totals.get(key)
            if total is None:
                mod = self.modules.get(key)
                if mod is None:
                    continue
                total = 0
                for p in mod.parameters():
                    g = p.grad
                    if g is not None:
                        total += g.untyped_storage().nbytes()
            if total > st.gradient_bytes:
                st.gradient_bytes = total

    def records(self) -> list[ModuleStats]:
        return list(self.stats.values())
