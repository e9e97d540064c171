"""Where one iteration ends and the next begins, and whether it trains or evaluates.

The iteration model, behind a small interface the session wires to its hooks: the optimizers' step
hooks (:meth:`Boundaries.before_optimizer_step`, :meth:`Boundaries.after_optimizer_step`), the
ends of backward passes (:meth:`Boundaries.on_backward_start`, :meth:`Boundaries.on_backward_end`,
from :mod:`memprof.collect.autograd`), the model's calls (:meth:`Boundaries.on_model_call`), the
fate of their graphs (``on_graph_*``) and :meth:`Boundaries.finish`. It tells
:class:`~memprof.session.steps.Steps` where an iteration ends. A training iteration ends where the
weights are updated, as autograd and the optimizer show it:

- a step of the primary optimizer (the first that steps; another one becomes primary where it steps
  twice while the primary does not). Everything inside a step is part of it: LBFGS's closure calls
  the model and backward many times in one iteration. Other optimizers' steps (a GAN's second) are
  part of the primary's iteration.
- weights updated by hand, where no optimizer has stepped: the end of each backward pass notes
  two parameters of each model (their version counters and their gradients); an in-place write to
  one (``p -= lr * p.grad`` under ``no_grad``), or its gradient reset (``zero_grad()``,
  ``p.grad.zero_()``, ``p.grad = None``), seen at the next model call or backward, ends the iteration
  there. Where neither shows (``p.data.add_`` then ``p.grad.data.zero_()``) and no optimizer holds
  the model's parameters (one heap scan), a model called with autograd on after a backward starts
  the next one.

Several model calls with no update between them are one iteration: chunks and windows before one
backward, micro-batches (several backward passes) before one step, an episode whose graphs are kept
for one backward at its end. Only where no backward runs are repeated calls of a model, from the
same line, iterations (of an evaluation or inference loop), when:

- autograd is off (``no_grad``, ``inference_mode``) and no graph recorded since the last backward is
  still alive (besides the last call's at this line, which this call's result may replace: a graph
  kept by the step, as an episode keeps its log-probabilities, says the step is not over);
- or autograd is on and the model is in ``eval()`` mode; or in ``train()`` mode, graphs of this line
  are being dropped without a backward while none is kept (the ``missing_no_grad`` bug, still
  found), or this line's graphs were dropped so before and never went to a backward.

A line whose graphs went to a backward before is never cut while its graphs are kept. The phase
follows: an iteration with a backward pass or an update trains, one without evaluates; a call with
autograd turned on again, or in another mode (``train()``), ends an evaluation's last iteration.

Known limitations:
- The first repeated call of a line in ``train()`` mode with autograd on is not an iteration
  boundary until that line's graphs are seen dropped: an evaluation loop without ``no_grad`` nor
  ``eval()`` has one iteration fewer (two in watch mode) than it has calls, the first time.
- Weights updated through ``.data`` with gradients zeroed through ``.data`` while an optimizer that
  never steps holds them: one iteration per 64 backward passes.
- A step skipped by a ``GradScaler`` (inf gradients) after the first optimizer step merges its
  iteration with the next.
"""

from __future__ import annotations

import sys
import weakref
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from memprof.collect.autograd import graph_leaves
from memprof.collect.census import live_objects
from memprof.collect.modules import RootCall, batch_size_of, call_site
from memprof.collect.sites import user_frame
from memprof.model.run import ForwardRecord

if TYPE_CHECKING:
    from memprof.session.core import Session

Site = tuple[int, tuple[int, int]]  # (id of the model, its call site: code and bytecode offset)
Mode = tuple[bool, bool]  # (autograd on, module.training) of a call
PROBES_PER_MODEL = 2  # parameters whose versions and gradients are noted at a backward's end
MAX_MODELS_PROBED = 8
BACKWARDS_WITHOUT_UPDATE = 64  # then each backward pass ends an iteration (no update seen at all)
MAX_SITES = 4096  # lines remembered as training or evaluation ones


class _SiteGraphs:
    __slots__ = ("alive", "dropped", "last")

    def __init__(self) -> None:
        self.alive = 0
        self.dropped = 0
        self.last: ForwardRecord | None = None


class PendingGraphs:
    """The graphs of model calls since the last backward pass, by call site: how many are alive,
    how many died with no backward; and what each line's graphs became before (a backward reached
    them: a training line; dropped while the line was called again: an evaluation line)."""

    def __init__(self) -> None:
        self.alive = 0
        self.presumed = 0  # calls at training lines not followed (watch mode): their graphs presumed kept
        self.sites: dict[Site, _SiteGraphs] = {}
        self._records: dict[int, tuple[Site, Mode, ForwardRecord]] = {}
        self.train_sites: dict[Site, Mode] = {}
        self.eval_sites: dict[Site, Mode] = {}

    def watched(self, site: Site, mode: Mode, record: ForwardRecord) -> None:
        g = self.sites.get(site)
        if g is None:
            g = self.sites[site] = _SiteGraphs()
        g.alive += 1
        g.last = record
        self.alive += 1
        self._records[id(record)] = (site, mode, record)

    def backpropagated(self, record: ForwardRecord) -> None:
        entry = self._records.get(id(record))
        if entry is not None and entry[2] is record:
            _remember(self.train_sites, entry[0], entry[1])

    def dead(self, record: ForwardRecord) -> None:
        entry = self._records.get(id(record))
        if entry is None or entry[2] is not record:
            return  # from before the last backward pass
        del self._records[id(record)]
        self.alive -= 1
        g = self.sites.get(entry[0])
        if g is not None:
            g.alive -= 1
            if not record.backpropagated:
                g.dropped += 1

    def backward_done(self) -> None:
        """A backward pass ended: the graphs before it are its, or outlive it (a retained graph)."""
        if self._records:
            self._records.clear()
            self.sites.clear()
        self.alive = self.presumed = 0

    def kept(self, site: Site) -> int:
        """Graphs alive, besides the last one of ``site`` (the one a call at that line replaces)."""
        g = self.sites.get(site)
        last = g.last if g is not None else None
        return self.alive + self.presumed - (1 if last is not None and not last.dead else 0)

    def training_line(self, site: Site, mode: Mode) -> bool:
        """Whether this line's graphs, in this mode, went to a backward before and none was
        dropped since the last backward."""
        if self.train_sites.get(site) != mode:
            return False
        g = self.sites.get(site)
        return g is None or g.dropped == 0

    def is_eval(self, site: Site, mode: Mode) -> bool:
        """Whether a repeated call at ``site`` (no backward since its last) is an evaluation's."""
        g = self.sites.get(site)
        dropped = g is not None and g.dropped > 0
        if not mode[0]:
            return self.kept(site) == 0
        if self.train_sites.get(site) == mode and not dropped:
            return False  # its graphs went to a backward: kept for one now
        if not mode[1] or (self.kept(site) == 0 and (dropped or self.eval_sites.get(site) == mode)):
            _remember(self.eval_sites, site, mode)
            return True
        return False


def _remember(table: dict[Site, Mode], site: Site, mode: Mode) -> None:
    if len(table) >= MAX_SITES and site not in table:
        table.clear()
    table[site] = mode


class Boundaries:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.in_loop = False  # the first model call (or backward) opened the first iteration
        self.backwards = 0  # backward passes ended, in the run
        self.primary_optimizer: int | None = None  # id() of the optimizer whose steps are iterations
        self._primary_ref: weakref.ref[torch.optim.Optimizer] | None = None
        self._others: set[int] = set()  # other optimizers that stepped since the primary's last step
        self._stepping: list[int] = []  # optimizers whose step() runs now (an LBFGS closure runs inside)
        self._in_backward = False
        self.optimizer_stepped = False  # an optimizer (any) stepped in the open iteration
        self.autocast_used = False
        self.graphs = PendingGraphs()
        # The open iteration:
        self._called: dict[int, tuple[int, tuple[int, int]]] = {}  # model -> (backwards at its last call, site)
        self._calls = 0
        self._grad_calls = 0  # of which with autograd on
        self._backward_calls = 0  # backward passes started in the open iteration...
        self._backward_ends = 0  # ...and ended
        self._last_call_mode: Mode | None = None
        self._training_line = False  # the last repeated call was at a line whose graphs go to a backward
        # Updates by hand, while no optimizer has stepped:
        self._snapshot: list[tuple[weakref.ref[torch.Tensor], int, int, int]] | None = None
        self._probes: list[weakref.ref[torch.Tensor]] = []
        self._probed_at = -1  # the models' roots_changed when the probes were found
        self._optimizer_holds: bool | None = None  # whether an optimizer holds the models' parameters
        self._each_backward = False  # no update ever seen: each backward pass ends an iteration

    def new_iteration(self) -> None:
        self.optimizer_stepped = False
        self._called = {}
        self._calls = 0
        self._grad_calls = 0
        self._backward_calls = 0
        self._backward_ends = 0
        self._snapshot = None

    def _cut(self, phase: str, frame: Any) -> None:
        """The open iteration ends here."""
        s = self.session
        steps = s.steps
        if phase == "train" and not s.detail and not steps.opened_in_detail:
            steps.watch_boundary("train")
        else:
            steps.end(phase, frame)

    # -- optimizers --------------------------------------------------------------------------------
    def before_optimizer_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """The optimizer pre-hook: what runs until its post-hook (a closure) is inside the step."""
        running = self._stepping
        if id(opt) in running:  # a step of it raised: its post-hook never ran
            running.clear()
        running.append(id(opt))
        self.session.optimizers.before_step(opt, args, kwargs)

    def after_optimizer_step(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """The optimizer post-hook: the primary optimizer's step ends a training iteration."""
        s = self.session
        running = self._stepping
        if running and running[-1] == id(opt):
            running.pop()
        else:
            running.clear()
        self.optimizer_stepped = True
        self._snapshot = None
        s.optimizers.after_step(opt)
        if running or not self._is_primary(opt):  # a step inside another's, or a second optimizer
            return
        self._cut("train", sys._getframe(1))

    def _is_primary(self, opt: torch.optim.Optimizer) -> bool:
        ref = self._primary_ref
        primary = ref() if ref is not None else None
        if primary is opt:
            self._others.clear()
            return True
        key = id(opt)
        if primary is None or key in self._others:  # none yet, it died, or it stopped stepping
            self.primary_optimizer = key
            self._primary_ref = weakref.ref(opt)
            self._others.clear()
            return True
        self._others.add(key)
        return False

    # -- backward passes -----------------------------------------------------------------------------
    def on_backward_start(self) -> None:
        s = self.session
        if s.stopped:
            return
        self._in_backward = True
        if not self.in_loop:  # the first backward before the loop's first boundary call
            self.in_loop = True  # (tensors trained without a module, or a model called in a closure)
            batch = s.steps.batch
            s.steps.begin(0)
            s.steps.batch = batch
        elif not self._stepping and self._snapshot is not None and self._updated():
            self._cut("train", sys._getframe(1))
        self._backward_calls += 1

    def on_backward_end(self, outputs: Any, inputs: Any) -> None:
        s = self.session
        self._in_backward = False
        if s.stopped:
            return
        self.backwards += 1
        self._backward_ends += 1
        self.graphs.backward_done()
        if self._stepping or self.primary_optimizer is not None:
            return
        self._snapshot = self._take_snapshot(outputs, inputs)
        if self._each_backward or self._backward_calls >= BACKWARDS_WITHOUT_UPDATE:
            self._each_backward = True
            self._cut("train", sys._getframe(1))

    def _probe_tensors(self, outputs: Any, inputs: Any) -> list[weakref.ref[torch.Tensor]]:
        """Parameters to watch for updates: the first and last trainable ones of each model, or,
        without a model, leaves of the graph just backpropagated."""
        modules = self.session.modules
        found: list[torch.Tensor] = []
        if modules.roots:
            for m in list(modules.roots.values())[:MAX_MODELS_PROBED]:
                trainable = [p for p in m.parameters() if p.requires_grad]
                found += trainable[:1] + trainable[1:][-1:]
        else:
            leaves = inputs if inputs is not None else None
            if isinstance(leaves, torch.Tensor):
                found = [leaves]
            elif isinstance(leaves, (list, tuple)):
                found = [t for t in leaves if isinstance(t, torch.Tensor)][:PROBES_PER_MODEL]
            else:
                found = graph_leaves(outputs, want=PROBES_PER_MODEL)
        self._probes = probes = [weakref.ref(p) for p in found]
        self._probed_at = modules.roots_changed
        return probes

    def _take_snapshot(self, outputs: Any, inputs: Any, again: bool = False,
                       ) -> list[tuple[weakref.ref[torch.Tensor], int, int, int]] | None:
        """The probes' versions and gradients now (at every backward's end: one loop over the
        probes, found again where the models changed or, once, where a probe died)."""
        probes = self._probes
        if not probes or self._probed_at != self.session.modules.roots_changed:
            probes = self._probe_tensors(outputs, inputs)
        snap = []
        for ref in probes:
            p = ref()
            if p is None:
                if again:
                    continue
                self._probes = []
                return self._take_snapshot(outputs, inputs, True)
            g = p.grad
            snap.append((ref, p._version, id(g) if g is not None else 0, g._version if g is not None else -1))
        return snap or None

    def _updated(self) -> bool:
        """Whether a watched parameter was written in place, or its gradient reset, since the
        last backward pass."""
        for ref, version, grad_id, grad_version in self._snapshot or ():
            p = ref()
            if p is None:
                continue
            if p._version != version:
                return True
            g = p.grad
            if (id(g) if g is not None else 0) != grad_id or (g is not None and g._version != grad_version):
                return True
        return False

    def _no_optimizer(self) -> bool:
        """Whether no optimizer holds the models' parameters (a heap scan, once)."""
        if self._optimizer_holds is None:
            params = {id(p) for m in list(self.session.modules.roots.values()) for p in m.parameters()}
            self._optimizer_holds = any(
                id(p) in params for opt in live_objects(torch.optim.Optimizer)
                for group in opt.param_groups for p in group["params"])
        return not self._optimizer_holds

    # -- model calls -----------------------------------------------------------------------------------
    def on_model_call(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                      caller: FrameType | None) -> RootCall | None:
        """A call of a model from the frame ``caller``. Returns the call when its output is to be
        followed."""
        s = self.session
        if s.stopped:
            return None
        try:
            if self._stepping or self._in_backward:
                # Inside an optimizer's step (LBFGS's closure, Lightning's training step) or a
                # backward (a checkpoint's recomputation): part of that step, never a boundary.
                if s.detail:
                    return self._follow(module, args, kwargs)
                if s.steps.batch is None and not self._in_backward:
                    s.steps.batch = batch_size_of(args, kwargs)
                return None
            site = call_site(user_frame(caller))
            mode = (torch.is_grad_enabled(), module.training)
            key = id(module)
            prev = self._called.get(key)
            last_mode = self._last_call_mode
            if not self.in_loop:
                self.in_loop = True
                call = self._follow(module, args, kwargs, mode != last_mode)
                s.steps.begin(0)
                s.steps.batch = call.batch_size
                self._note_call(key, site, mode)
                return call
            phase = self._boundary_before(key, site, mode, prev)
            if phase is not None:
                self._cut(phase, caller)
                if phase == "train":  # the call opens the next step: in watch mode, the cheap path
                    prev = None  # (an evaluation's next call is followed: its graph may be dropped)
            self._note_call(key, site, mode)
            if not s.detail and (prev is None or (phase is None and self._presumed())):
                # Watch mode, the model's first call in this iteration: the common case, kept cheap;
                # its call site still marks where an evaluation loop's next iteration begins. Or a
                # call again at a line whose graphs go to a backward (an episode's): not followed.
                steps = s.steps
                if steps.batch is None:
                    steps.batch = batch_size_of(args, kwargs)
                return None
            return self._follow(module, args, kwargs, mode != last_mode)
        except Exception as e:
            s.warn(f"internal error at a model call: {e!r}", tb=True)
            return None

    def _presumed(self) -> bool:
        """Whether this call, at a line whose graphs go to a backward, goes unfollowed (watch mode):
        its graph is presumed kept for the backward, as the line's graphs were before."""
        if self._training_line:
            self.graphs.presumed += 1
            return True
        return False

    def _note_call(self, key: int, site: tuple[int, int], mode: Mode) -> None:
        self._called[key] = (self.backwards, site)
        self._calls += 1
        self._grad_calls += mode[0]
        self._last_call_mode = mode

    def _boundary_before(self, key: int, site: tuple[int, int], mode: Mode,
                         prev: tuple[int, tuple[int, int]] | None) -> str | None:
        """The phase of the iteration that ends before this call, or None where none ends."""
        self._training_line = False
        if self._snapshot is not None and self._updated():
            return "train"  # the weights were updated (or their gradients reset) since the backward
        if (mode[0] and mode != self._last_call_mode and self._calls and not self._backward_calls
                and self.session.steps.phase == "eval"):
            return "eval"  # autograd on again, or train() again, after an evaluation's calls
        if prev is None:
            return None
        if prev[1] == site and mode[0]:
            self._training_line = self.graphs.training_line((key, site), mode)
        if prev[0] != self.backwards:  # a backward since this model's last call, no update seen
            if mode[0] and self.primary_optimizer is None and self._no_optimizer():
                self._training_line = False
                return "train"
            return None
        if prev[1] != site or self._training_line:
            # Calls from other lines are one iteration's (D(real), then D(fake)); a line whose
            # graphs went to a backward before keeps them for one now.
            return None
        return "eval" if self.graphs.is_eval((key, site), mode) else None

    def _follow(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                changed: bool = False) -> RootCall:
        s = self.session
        steps = s.steps
        call = s.modules.make_call(module, args, kwargs)
        if steps.batch is None:
            steps.batch = call.batch_size
        if call.batch_size and not s.tracker.batch_size:
            s.tracker.batch_size = call.batch_size
        if torch.is_autocast_enabled() or torch.is_autocast_enabled("cpu"):
            self.autocast_used = True
        if changed and s.detail and not s.modules.packing:
            # Another kind of call (training <-> evaluation): the saved tensors of this one are not
            # those of the sampled steps. Measured, not inferred, until the boundary.
            s.tracker.infer_saved = False
            s.modules.set_pack(True)
        return call

    # -- the graphs of model calls ---------------------------------------------------------------------
    def on_graph_watched(self, call: RootCall, record: ForwardRecord) -> None:
        self.graphs.watched((id(call.module), call.call_site), (call.grad_enabled, call.module.training), record)

    def on_graph_backward(self, record: ForwardRecord) -> None:
        self.graphs.backpropagated(record)

    def on_graph_dead(self, record: ForwardRecord) -> None:
        self.graphs.dead(record)

    # -- the end ---------------------------------------------------------------------------------------
    def finish(self) -> None:
        """At the end of a run: record the iteration still open (an evaluation's last, or a
        training one whose update no later call or backward saw)."""
        s = self.session
        steps = s.steps
        if not self.in_loop or self.optimizer_stepped or not (self._calls or self._backward_calls):
            return
        # A run that died in a training step (an out-of-memory in its forward or backward) was
        # training; a prediction with autograd off after the last step is an inference call.
        # (An out-of-memory before the first step(): the optimizers holding the model's parameters,
        # found then, say it was training.)
        training = self._backward_calls > 0 or (self._grad_calls > 0 and steps.phase == "train" and (
            self.primary_optimizer is not None or self.backwards > 0
            or (s.oom.capture is not None and bool(s.optimizers.live()))))
        steps.record("train" if training else "eval", None)
        last = steps.last
        if last is not None and last.detailed and not (self._backward_ends and self.primary_optimizer is None):
            # An evaluation's last iteration (or a first step that died) ends with the script; its
            # end is the last model call's, not the empty memory after the script returned.
            steps.set_last_end(s.live_after_call)
