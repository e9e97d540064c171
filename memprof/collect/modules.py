"""Modules: who holds activations, parameters and gradients; which module calls are iterations.

Nothing of memprof sits on the user's objects: a model, its optimizer and their state dicts pickle,
deep-copy, ``torch.save``, ``torch.compile`` and ``torch.jit.script`` as under plain python, and a
copy is a new model (state is kept by ``id`` with weak references, and forgotten when a module dies).

- Root calls (a model called while no other model runs) are seen by one layer on
  ``nn.Module.__call__`` (:mod:`memprof.collect.layer`), on for the session's life, watch mode
  included: inside a root's call it costs one attribute read per module call. PyTorch's global
  module hooks would put every module call on ``Module._call_impl``'s slow path instead (x1.10 on
  the tiny MLP's step, measured; the layer costs less than the root's own hooks it replaced).
  A root's calls give the batch size and mark evaluation iterations when no optimizer steps.
- In detailed steps only, global forward pre/post hooks keep a stack of running modules, and a
  saved-tensor hook sees every tensor autograd saves for backward; its bytes are charged, once per
  storage, to each module running at that moment.

Known limitations:
- The pack hook hands autograd ``t.detach()`` (autograd re-attaches the history from its own
  metadata on unpack); returning ``t`` itself would make a reference cycle that never frees.
- Activations computed outside any module (a loss function on logits) are counted in the
  breakdown but not charged to a module.
- A model first called in watch mode is adopted (named, its calls followed) at the next detailed step.
- Calls under a fake-tensor mode (memprof's own replays, ``make_fx``), ``torch.jit.trace`` or
  inside a backward pass (a checkpoint's recomputation) are not followed: not the run's calls.
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

from memprof.collect.batch import _describe as _describe  # re-exported: tests read it here
from memprof.collect.batch import _signature, batch_size_of, call_inputs, input_storages
from memprof.collect.batch_probe import watch as watch_batch
from memprof.collect.layer import Gate, install, uninstall
from memprof.collect.sites import user_frame
from memprof.collect.storage import StorageTracker
from memprof.model.categories import PARAMETERS
from memprof.model.run import CallInputs

if TYPE_CHECKING:
    from memprof.collect.native import NativeTracker


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


def _merged(a: ModuleStats, b: ModuleStats, module_id: int | None = None) -> ModuleStats:
    """One record for two modules of one name (one made again): the largest figures, all calls."""
    return ModuleStats(name=a.name, type=a.type, module_id=a.module_id if module_id is None else module_id,
                       parameter_bytes=max(a.parameter_bytes, b.parameter_bytes),
                       gradient_bytes=max(a.gradient_bytes, b.gradient_bytes),
                       activation_bytes=max(a.activation_bytes, b.activation_bytes), calls=a.calls + b.calls)


@dataclass
class RootCall:
    """One call of a root module, as the session needs it."""

    module: nn.Module
    name: str
    batch_size: int | None
    grad_enabled: bool
    site: tuple[str, int] | None  # the user line that called the model
    call_site: tuple[int, int] = (0, 0)  # (id of the calling code, bytecode offset): the same call in a loop


def call_site(frame: FrameType | None) -> tuple[int, int]:
    """Where a model is called from, to the bytecode instruction: the same line in a loop is the
    same site, two calls on one line are two."""
    return (id(frame.f_code), frame.f_lasti) if frame is not None else (0, 0)


_FAKE = torch._C._TorchDispatchModeKey.FAKE
_mode_of = torch._C._get_dispatch_mode
_compiling = torch.compiler.is_compiling
_jit_tracing = torch._C._get_tracing_state
_in_backward = torch._C._current_graph_task_id  # -1 outside the autograd engine's backward


class ModuleCollector:
    def __init__(
        self,
        tracker: StorageTracker | NativeTracker,
        on_root_call: Callable[[nn.Module, tuple[Any, ...], dict[str, Any], FrameType | None], RootCall | None],
        on_root_output: Callable[[RootCall, Any], None],
    ) -> None:
        self.tracker = tracker
        self.on_root_call = on_root_call
        self.on_root_output = on_root_output
        # By id, of live modules only: a module's entries go when it dies (its record to _retired),
        # so that a new module at a dead one's address is a new module.
        self.stats: dict[int, ModuleStats] = {}
        self.names: dict[int, str] = {}
        self._retired: dict[tuple[str, str], ModuleStats] = {}  # the records of modules that died, by name
        self._alive: dict[int, weakref.KeyedRef[int, nn.Module]] = {}
        self._root_refs: dict[int, weakref.KeyedRef[int, nn.Module]] = {}  # roots, read at each root call
        self.roots_changed = 0  # counts roots adopted and dead: what was derived from them is stale
        self._on_death = self._forget  # one bound method for every weak reference
        self.stack: list[ModuleStats] = []
        # Weak: memprof must not keep a user's model alive past its last use.
        self.roots: weakref.WeakValueDictionary[int, nn.Module] = weakref.WeakValueDictionary()
        self.modules: weakref.WeakValueDictionary[int, nn.Module] = weakref.WeakValueDictionary()
        self._gate = Gate()
        self._global_handles: list[RemovableHandle] = []
        self._saved_hooks: Any = None
        self.last_inputs: dict[tuple[int, bool], CallInputs] = {}  # (id(root), grad on) -> its last call
        self._signatures: dict[tuple[int, bool], tuple[Any, ...] | None] = {}  # ... and what it depends on
        self.detail = False

    # -- detail on/off ---------------------------------------------------------------------------
    def enable_detail(self) -> None:
        if self.detail:
            return
        self.detail = True
        self._open()
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
        uninstall(self._gate)

    def _open(self) -> None:
        """Start following root calls (the layer on ``nn.Module.__call__``); until :meth:`close`."""
        if self._gate.top is None:
            install(self._gate, self._top_call)

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
        """Name a top-level module's tree; a model (one with parameters) is also a root: its calls are followed."""
        self._open()
        prefix = self._variable_name(module, caller) or type(module).__name__
        for qual, sub in module.named_modules():
            if self._known(sub):
                continue
            st = self._remember(sub, f"{prefix}.{qual}" if qual else prefix)
            st.parameter_bytes = sum(p.untyped_storage().nbytes() for p in sub.parameters())
        for p in module.parameters():
            self.tracker.set_category(p, PARAMETERS)
            self.tracker.add_fixed_numel(p.numel())
        for b in module.buffers():
            self.tracker.set_category(b, PARAMETERS)
        if next(module.parameters(), None) is None:
            return False  # a loss or an activation called on its own: not a model, not an iteration
        self.roots[id(module)] = module
        self._root_refs[id(module)] = self._alive[id(module)]
        self.roots_changed += 1
        return True

    def _known(self, module: nn.Module) -> bool:
        ref = self._alive.get(id(module))
        return ref is not None and ref() is module

    def _remember(self, module: nn.Module, name: str) -> ModuleStats:
        """A new module's record, by its id while it lives."""
        key = id(module)
        self._forget_key(key)  # a dead module's, at the same address, whose death was not yet seen
        self.names[key] = name
        self.modules[key] = module
        self._alive[key] = weakref.KeyedRef(module, self._on_death, key)
        st = self.stats[key] = ModuleStats(name=name, type=type(module).__name__, module_id=key)
        return st

    def _forget(self, ref: weakref.KeyedRef[int, nn.Module]) -> None:
        """A module died (a weak reference's callback: runs anywhere, a garbage collection)."""
        if self._alive.get(ref.key) is ref:
            self._forget_key(ref.key)

    def _forget_key(self, key: int) -> None:
        self._alive.pop(key, None)
        if self._root_refs.pop(key, None) is not None:
            self.roots_changed += 1
        self.names.pop(key, None)
        st = self.stats.pop(key, None)
        if st is not None:  # one record per name: a loss module made at each step is one module
            old = self._retired.get((st.name, st.type))
            self._retired[(st.name, st.type)] = st if old is None else _merged(old, st)

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

    # The layer calls this for every module call outside a root's call (in watch mode too): a
    # root's call (one a step), a loss function, a module not adopted. Inside a root's call, the
    # layer passes calls straight on (a root called inside another root is not an iteration).
    def _top_call(self, inner: Callable[..., Any], module: nn.Module, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
        if _compiling():  # Dynamo tracing the layer (``torch.compile``): nothing of memprof's is traced
            return inner(module, *args, **kwargs)
        ref = self._root_refs.get(id(module))
        root = ref is not None and ref() is module
        if not root and (not self.detail or self.stack or self._known(module)):
            return inner(module, *args, **kwargs)  # not a model (a loss), or one to adopt in detail
        if _mode_of(_FAKE) is not None or _jit_tracing() or _in_backward() != -1:
            # A replay on fake tensors, a ``torch.jit.trace``, a checkpoint's recomputation in
            # backward: not the run's calls. (Checked for models only: a loss module's call, at
            # every step, passes on above without these three.)
            return inner(module, *args, **kwargs)
        if not root:
            try:  # detail, a module called at the top that we have not seen: a new root?
                adopted = self._adopt_root(module, user_frame(sys._getframe(2)))
            except Exception:
                adopted = False
            if not adopted:
                return inner(module, *args, **kwargs)
        gate = self._gate
        gate.busy = True
        call = None
        try:
            call = self.on_root_call(module, args, kwargs, sys._getframe(1).f_back)  # the layer's caller
        except torch.OutOfMemoryError:
            gate.busy = gate.top is None or None
            raise
        except Exception:
            pass  # never break the user's run (the session's callbacks warn on their own)
        output = None
        try:
            output = inner(module, *args, **kwargs)
        finally:
            gate.busy = gate.top is None or None  # (closed meanwhile: it stays shut)
            if call is not None:
                try:
                    self.on_root_output(call, output)
                except Exception:
                    pass
        return output

    def make_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> RootCall:
        """The details of a root call the session follows: who called it, with what batch."""
        frame = user_frame(sys._getframe(1))
        site = (frame.f_code.co_filename, frame.f_lineno) if frame is not None else None
        grad = torch.is_grad_enabled()
        batch, described = None, None
        try:
            described = self._describe_call(module, args, kwargs, grad)
            batch = described.batch_size
            if not self.tracker.batch_size:  # the first batch: the tracker marks it as scaling
                self.tracker.first_inputs = input_storages(args, kwargs)
        except Exception:
            batch = batch_size_of(args, kwargs, module)
        call = RootCall(
            call_site=call_site(frame),
            module=module,
            name=self.names.get(id(module), type(module).__name__),
            batch_size=batch,
            grad_enabled=grad,
            site=site,
        )
        watch_batch(module, args, kwargs, call, described, self.tracker)  # what the model reads
        return call

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
        if _compiling():  # dynamo traces the hooks too: what it compiles runs without them
            return
        key = id(module)
        st = self.stats.get(key)  # only live modules' (a dead one's entry goes with it)
        if st is None:
            if not self.stack:
                # A module we have not seen, called at the top: the layer adopts those, this is a
                # call that did not pass through it. Named now; its calls are followed from the next.
                try:
                    self._adopt_root(module, user_frame(sys._getframe(1)))
                except Exception:  # never break the user's forward
                    pass
                st = self.stats.get(key) or self._remember(module, type(module).__name__)
            else:
                st = self._remember(module, f"{self.stack[-1].name}.<{type(module).__name__}>")
        st.calls += 1
        self.stack.append(st)
        self.tracker.enter_module(key, st.name)

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if _compiling():
            return
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
        for key, st in list(self.stats.items()):
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
        """Every module's record, those of modules that died included (with a live one of the same
        name, as one record)."""
        dead = dict(self._retired)
        live = []
        for st in list(self.stats.values()):
            old = dead.pop((st.name, st.type), None)
            live.append(st if old is None else _merged(old, st, st.module_id))
        return [*dead.values(), *live]
