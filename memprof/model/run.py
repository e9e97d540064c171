"""The typed record of a run: what the collectors produce, and the doctor and the advisor read.

Torch-free: a tensor is described here (shape, dtype, bytes), never held; live objects the
advisor's replay needs (a model, an optimizer) are weak references."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from memprof.model.report import CudaStats


@dataclass
class GraphStats:
    nodes: int = 0
    saved_bytes: int = 0  # saved tensors still alive (not freed by a backward)
    graphs: int = 0  # tensors with a grad_fn
    graphs_with_saved: int = 0
    root_keys: list[int] = field(default_factory=list)  # id() of every root
    saved_root_keys: list[int] = field(default_factory=list)  # roots whose graph holds saved tensors
    forward_keys: list[int] = field(default_factory=list)  # model-output nodes met on the way
    # The earliest boundary at which one of these graphs was already seen holding saved tensors
    # (a stamp in the root node's metadata: id() of a node can be reused once it dies).
    first_seen: int | None = None


@dataclass
class VarObservation:
    path: str  # "total_loss", "self.history", "stats.outputs"
    file: str  # the frame's file
    function: str
    first_line: int  # the frame's function's first line
    line: int  # the frame's current line
    is_container: bool
    tensors: int = 0
    bytes: int = 0
    storage_keys: set[int] = field(default_factory=set)
    graph: GraphStats = field(default_factory=GraphStats)
    newest_key: int | None = None  # storage of the last tensor in a container
    owner_file: str | None = None  # for "obj.attr": the source file of obj's class

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.file, self.function, self.path)


@dataclass
class ForwardRecord:
    module: str
    site: tuple[str, int] | None  # the user line that called the module
    step: int
    phase: str
    saved_bytes: int = 0  # bytes autograd saved during this forward
    backpropagated: bool = False
    backward_site: tuple[str, int] | None = None
    dead: bool = False
    dead_step: int | None = None
    node_key: int = 0
    alive: int = 1  # this line's graphs alive without a backward at this call's end, this one's included
    no_grad_saving: int | None = None  # measured: the peak's fall under no_grad with ``alive`` such graphs


@dataclass
class LingeringCandidate:
    """A storage from an earlier iteration, alive at this iteration's peak."""

    key: int
    nbytes: int
    created_step: int
    seq: int = 0  # the tracker's number for the storage: ``key`` (an id) is reused once it dies
    path: str | None = None  # the variable referring to it at the peak
    file: str | None = None
    function: str | None = None
    first_line: int | None = None
    line: int | None = None
    freed_before_end: bool = False  # dropped later in the same iteration: it only lingered
    saving: int = 0  # how much lower the iteration's peak would be without it
    peak: int = 0  # the peak of the iteration it lingered in


@dataclass(slots=True)
class IterationRecord:
    """One iteration. A run keeps one per step, so a watched step's record is small: slots, and
    shared empty tuples where detail has nothing to say (about 170 bytes instead of 460)."""

    index: int
    phase: str  # "train" | "eval"
    detailed: bool
    peak_bytes: int
    end_bytes: int
    batch_size: int | None
    seconds: float
    variables: Sequence[VarObservation] = ()
    lingering: Sequence[LingeringCandidate] = ()
    # (fixed, scaled) bytes at each local maximum of live memory: the advisor's batch model
    frontier: Sequence[tuple[int, int]] = ()
    cuda_allocated_peak: int | None = None
    cuda_reserved: int | None = None
    end_categories: tuple[int, ...] | None = None  # a detailed step's live bytes by category at its end


@dataclass
class TensorInfo:
    """One live storage, for the post-mortem and the growth site."""

    bytes: int
    shape: tuple[int, ...]
    dtype: str
    category: str
    module: str
    created_step: int
    file: str | None
    line: int | None


@dataclass
class OomCapture:
    """What held memory at the moment of an out-of-memory."""

    requested_bytes: int | None
    live_bytes: int
    limit_bytes: int | None
    breakdown: dict[str, int]
    by_module: dict[str, int]
    largest: list[TensorInfo]
    step: int
    source: str  # "memory-limit" | "cuda"
    # For the advisor: the failing iteration's (fixed, scaled) local maxima so far, the failed
    # request included (a lower bound of what it needed), and its batch size.
    partial_frontier: list[tuple[int, int]] = field(default_factory=list)
    batch_size: int | None = None
    # Live bytes made before the loop that don't scale (a data set), and those that do (the batch).
    pre_loop_fixed_bytes: int = 0
    pre_loop_scaled_bytes: int = 0


@dataclass
class TensorSpec:
    """A tensor argument of a model call, described, not kept."""

    shape: tuple[int, ...]
    dtype: Any  # torch.dtype
    device: str
    requires_grad: bool = False


@dataclass
class CallInputs:
    """What a root module was last called with (shapes only): lets the advisor replay the call."""

    module: Any  # weakref.ref to the nn.Module
    args: Any  # the positional arguments: a pytree with TensorSpec leaves
    kwargs: Any
    batch_size: int | None
    training: bool
    grad_enabled: bool
    autocast: bool
    complete: bool = True  # False: an argument could not be described (the replay can't rebuild it)


@dataclass
class OptimizerInfo:
    type: str
    state_bytes: int
    param_bytes: int
    param_count: int
    options: dict[str, Any] = field(default_factory=dict)
    ref: Any = None  # weakref.ref to the optimizer, for the advisor's replay


@dataclass
class RunData:
    """Everything the advisor may read about a finished (or failed) run."""

    iterations: list[IterationRecord]
    peak_bytes: int
    breakdown_at_peak: dict[str, int]
    device_type: str
    device_total_bytes: int | None
    budget_bytes: int | None
    memory_limit_bytes: int | None
    optimizers: list[OptimizerInfo]
    modules: Sequence[object]  # collect.modules.ModuleStats
    cuda: CudaStats | None
    oom: OomCapture | None
    autocast_used: bool = False
    batch_size: int | None = None  # the batch size that the frontiers' "scaled" bytes belong to
    pre_loop_peak: int = 0  # the highest live bytes before the first iteration
    calls: list[CallInputs] = field(default_factory=list)  # each root module's last call
    replays: Any = None  # memprof.collect.replay.ReplaySet: made during the run, while the model lived
    # The batch size is a dimension of a parameter: an activation can then have a parameter's shape,
    # and "scaled" is ambiguous (the advisor then takes the slope from a replay at a prime batch).
    batch_collides: bool = False


def frontier(points: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (fixed, scaled) points not dominated by another: all that matters for max(fixed + r * scaled)
    at any batch ratio r >= 0."""
    out: list[tuple[int, int]] = []
    best = -1
    for fixed, scaled in sorted(set(points), key=lambda p: (-p[1], -p[0])):
        if fixed > best:
            out.append((fixed, scaled))
            best = fixed
    return out


def frontier_from_live(points: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The same from (live, scaled) pairs, as the tracker records them."""
    return frontier((live - scaled, scaled) for live, scaled in points)
