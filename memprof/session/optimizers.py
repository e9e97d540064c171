"""The optimizers a run steps, and the categories of the tensors they hold (parameters, state)."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch

from memprof.collect.census import live_objects
from memprof.model.categories import GRADIENTS, OPTIMIZER_STATE, PARAMETERS
from memprof.model.run import OptimizerInfo

if TYPE_CHECKING:
    from memprof.session.core import Session


def state_tensors(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors an optimizer's state holds: its values, and the tensors in its lists (LBFGS keeps
    its history under the first parameter: ``old_dirs``, ``old_stps``, ``ro``, ``al``)."""
    out: list[torch.Tensor] = []
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                out.append(v)
            elif isinstance(v, (list, tuple)):
                out.extend(t for t in v if isinstance(t, torch.Tensor))
    return out


class Optimizers:
    """Keeps the run's optimizers (weakly) and categorises what they hold."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.by_id: weakref.WeakValueDictionary[int, torch.optim.Optimizer] = weakref.WeakValueDictionary()
        self._last_kept: weakref.ref[torch.optim.Optimizer] | None = None  # keep()'s last
        self._tensors: dict[int, list[int]] = {}  # id(optimizer) -> ids of its parameters and state

    def live(self) -> list[torch.optim.Optimizer]:
        return list(self.by_id.values())

    def before_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """The optimizer pre-hook, in detail: what it is about to read is gradients."""
        s = self.session
        if s.detail:
            self.keep(opt)
            s.tracker.set_categories([p.grad for group in opt.param_groups for p in group["params"]], GRADIENTS)
            if s.schedule.sampled_step():  # each module's largest gradient bytes: a maximum, sampled
                s.modules.record_gradients()

    def after_step(self, opt: torch.optim.Optimizer) -> None:
        if self.session.detail:
            self.keep(opt)
            self.categorise(opt)

    def keep(self, opt: torch.optim.Optimizer) -> None:
        last = self._last_kept
        if last is not None and last() is opt:  # the common case: the optimizer of the last step
            return
        if self.by_id.get(id(opt)) is not opt:  # a weak dictionary: setting it at each step costs
            self.by_id[id(opt)] = opt
        self._last_kept = weakref.ref(opt)

    def categorise(self, opt: torch.optim.Optimizer) -> None:
        tracker = self.session.tracker
        # The same parameter and state tensors as last time (the common case, with state updated
        # in place, as torch's optimizers do) are categorised already. A storage swapped under the same
        # tensor object (`p.data = ...`) waits for the next sampled step.
        tensors = [id(p) for group in opt.param_groups for p in group["params"]]
        held = state_tensors(opt)
        tensors += [id(v) for v in held]
        if self._tensors.get(id(opt)) == tensors and not self.session.schedule.sampled_step():
            return
        self._tensors[id(opt)] = tensors
        for group in opt.param_groups:
            for p in group["params"]:
                tracker.set_category(p, PARAMETERS)
                tracker.add_fixed_numel(p.numel())
        for v in held:
            tracker.set_category(v, OPTIMIZER_STATE)

    def categorise_all(self) -> None:
        tracker = self.session.tracker
        for opt in self.live():
            self.categorise(opt)
            for group in opt.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        tracker.set_category(p.grad, GRADIENTS)

    def find_for(self, models: list[torch.nn.Module]) -> None:
        """Before the first optimizer step (an out-of-memory in it): find the models' optimizers anyway."""
        if self.by_id:
            return
        try:
            params = {id(p) for m in models for p in m.parameters()}
            for opt in live_objects(torch.optim.Optimizer):
                if any(id(p) in params for g in opt.param_groups for p in g["params"]):
                    self.by_id[id(opt)] = opt
        except Exception:
            pass

    def infos(self) -> list[OptimizerInfo]:
        out = []
        for opt in self.live():
            storages: dict[int, int] = {}  # by address: a storage shared by two state tensors, once
            for v in state_tensors(opt):
                if v.dim() > 0:
                    st = v.untyped_storage()
                    storages[st.data_ptr()] = st.nbytes()
            state = sum(storages.values())
            params = [p for g in opt.param_groups for p in g["params"]]
            options = {k: v for k, v in opt.defaults.items() if isinstance(v, (bool, int, float, str, type(None)))}
            out.append(OptimizerInfo(
                type=type(opt).__name__, state_bytes=state, param_bytes=sum(p.untyped_storage().nbytes() for p in params),
                param_count=sum(p.numel() for p in params), options=options, ref=weakref.ref(opt),
            ))
        return out
