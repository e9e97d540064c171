"""The report: typed dataclasses for everything memprof tells a user.

This module is the contract of ``../shared/spec/report.md`` in code; :mod:`memprof.model.codec`
turns it into the contract's JSON and back. Nothing here imports torch, so reports load anywhere.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from memprof.model.categories import CATEGORIES, Category
from memprof.model.findings import Finding, Recommendation

SCHEMA = "memprof.report/1"


class Status(str, enum.Enum):
    OK = "ok"
    ERROR = "error"
    OOM = "oom"
    INTERRUPTED = "interrupted"


@dataclass
class DeviceInfo:
    type: str = "cpu"
    name: str = "cpu"
    total_bytes: int | None = None
    index: int | None = None


@dataclass
class Breakdown:
    """Bytes by category; the fields sum to the total they break down."""

    parameters: int = 0
    gradients: int = 0
    optimizer_state: int = 0
    activations: int = 0
    other: int = 0

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer_state + self.activations + self.other

    def get(self, category: Category) -> int:
        return int(getattr(self, category.value))

    def as_dict(self) -> dict[str, int]:
        return {c.value: self.get(c) for c in CATEGORIES}

    @classmethod
    def from_mapping(cls, values: dict[Category, int] | dict[str, int]) -> Breakdown:
        out = cls()
        names = {c.value for c in CATEGORIES}
        for key, value in values.items():
            name = key.value if isinstance(key, Category) else str(key)
            if name in names:
                setattr(out, name, int(value))
        return out


@dataclass
class StepRecord:
    """One iteration: a training step (optimizer step) or an evaluation iteration (root module call)."""

    index: int
    peak_bytes: int
    end_bytes: int
    batch_size: int | None = None
    seconds: float = 0.0
    phase: str = "train"  # "train" (ends at an optimizer step) or "eval" (root module calls only)
    detailed: bool = True  # False: watched cheaply, figures from counters
    breakdown: dict[str, int] | None = None  # a detailed step's: its end_bytes by category


@dataclass
class ModuleRecord:
    name: str
    type: str
    parameter_bytes: int = 0
    activation_bytes: int = 0
    gradient_bytes: int = 0
    calls: int = 0


@dataclass
class RankReport:
    rank: int
    peak_bytes: int
    steps: list[StepRecord] = field(default_factory=list)


class _Section:
    """A report section with optional fields, and ``extra`` for keys a newer memprof (or an importer)
    wrote: :meth:`items` lists what is set, in field order, as the renderers show it."""

    extra: dict[str, Any]

    def items(self) -> Iterator[tuple[str, Any]]:
        for f in fields(self):  # type: ignore[arg-type]
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is not None:
                yield f.name, value
        yield from self.extra.items()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.items()).get(key, default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        make: Any = cls
        names = {f.name for f in fields(make)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        return make(**known, extra={k: v for k, v in d.items() if k not in names and k != "extra"})


@dataclass
class TensorRecord(_Section):
    """One live storage (or, from a snapshot, one allocated block), for the post-mortem."""

    bytes: int = 0
    shape: list[int] | None = None
    dtype: str | None = None
    category: str | None = None
    module: str | None = None
    created_step: int | None = None
    file: str | None = None
    line: int | None = None
    function: str | None = None
    address: int | None = None
    requested_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class OomReport(_Section):
    """The post-mortem of an out-of-memory: what was asked for and what held memory at that moment."""

    source: str | None = None  # "memory-limit", "cuda", or "memory snapshot FILE"
    message: str | None = None
    requested_bytes: int | None = None
    live_bytes: int | None = None
    allocated_bytes: int | None = None
    reserved_bytes: int | None = None
    device_free_bytes: int | None = None
    limit_bytes: int | None = None
    step: int | None = None
    num_ooms: int | None = None
    file: str | None = None
    line: int | None = None
    breakdown: dict[str, int] | None = None  # bytes by category
    by_module: dict[str, int] | None = None
    largest_allocations: list[TensorRecord] | None = None  # from a snapshot
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CudaStats(_Section):
    """The CUDA caching allocator's figures, from the run's collector or from a memory snapshot."""

    source: str | None = None  # None: the run's collector; "snapshot": a memory snapshot
    allocated_bytes: int | None = None
    allocated_peak_bytes: int | None = None
    reserved_bytes: int | None = None
    reserved_peak_bytes: int | None = None
    active_bytes: int | None = None
    active_peak_bytes: int | None = None
    inactive_split_bytes: int | None = None
    inactive_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    largest_free_block_bytes: int | None = None
    segments: int | None = None
    num_ooms: int | None = None
    num_alloc_retries: int | None = None
    trace_entries: int | None = None
    device_free_bytes: int | None = None
    device_total_bytes: int | None = None
    history_recorded: bool | None = None
    allocator_settings: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepsKept(_Section):
    """How the run's steps were kept in ``steps`` (see :mod:`memprof.model.history`): all of them
    in a short run; in a long one every step of the first ``head`` and the last ``tail``, the
    detailed steps and the peak's, and between them, for each bucket of ``bucket_steps``
    consecutive steps, those with the lowest and the highest peak and end (``bucketed`` steps
    went through buckets). ``total`` counts every step, kept or not."""

    total: int = 0
    train: int | None = None
    eval: int | None = None
    detailed: int | None = None
    kept: int | None = None
    head: int | None = None
    tail: int | None = None
    bucket_steps: int | None = None
    bucketed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Budget:
    """The memory the advice plans for, and how a default was made."""

    bytes: int
    source: str  # "--budget", "--memory-limit", "device"
    parts: dict[str, int] = field(default_factory=dict)  # e.g. total_bytes, context_bytes
    note: str = ""


@dataclass
class BatchFigures:
    """The batch model the batch-size prediction rests on: peak = max(fixed + batch/b0 * scaled)."""

    reference_batch_size: int
    source: str  # "measured" or "replay"
    extra_bytes: int = 0
    lower_bound: bool = False
    iterations: list[int] = field(default_factory=list)  # the iterations measured
    points: list[tuple[int, int]] = field(default_factory=list)  # (fixed, scaled) bytes
    predicted_peak_bytes: int | None = None  # at the reference batch size
    largest_batch_size: int | None = None  # within the budget


@dataclass
class ReplayFigures:
    """The fake-tensor replays of the training step behind the predictions of unmeasured variants."""

    batch_size: int | None = None
    seconds: float = 0.0
    autocast_dtype: str | None = None
    checkpointed: list[str] = field(default_factory=list)
    zero_grad: str = ""
    errors: list[str] = field(default_factory=list)


@dataclass
class AdvisorModel:
    """The figures behind the recommendations: each advisor's, by its kind, for a user to check."""

    budget: Budget | None = None
    batch: BatchFigures | None = None
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # advisor kind -> its figures
    replay: ReplayFigures | None = None
    errors: list[str] = field(default_factory=list)  # an advisor that failed, and why

    @property
    def budget_bytes(self) -> int | None:
        return self.budget.bytes if self.budget is not None and self.budget.bytes > 0 else None


@dataclass
class Report:
    script: str
    argv: list[str] = field(default_factory=list)
    status: Status = Status.OK
    device: DeviceInfo = field(default_factory=DeviceInfo)
    peak_bytes: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    breakdown_at_peak: Breakdown = field(default_factory=Breakdown)
    modules: list[ModuleRecord] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    ranks: list[RankReport] | None = None
    schema: str = SCHEMA
    # Extensions of the contract (allowed: "extend it freely").
    exit_code: int | None = None
    error: str | None = None
    duration_seconds: float = 0.0
    memprof_version: str = ""
    cuda: CudaStats | None = None  # allocator counters (reserved, active, num_ooms, ...)
    oom: OomReport | None = None  # the post-mortem, when status is "oom"
    largest_tensors: list[TensorRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # memprof's own problems, never the script's
    advisor: AdvisorModel | None = None  # the model behind the predictions (see memprof.advise)
    steps_kept: StepsKept | None = None  # how a long run's steps were downsampled (None: all kept)

    @property
    def diagnoses(self) -> list[Finding]:
        return [f for f in self.findings if f.severity.is_diagnosis]

    @property
    def step_count(self) -> int:
        """How many steps the run had, kept in ``steps`` or not."""
        return self.steps_kept.total if self.steps_kept is not None else len(self.steps)

    @property
    def eval_step_count(self) -> int:
        kept = self.steps_kept
        if kept is not None and kept.eval is not None:
            return kept.eval
        return sum(1 for s in self.steps if s.phase == "eval")

    @property
    def budget_bytes(self) -> int | None:
        """The memory the run was planned for (``--budget`` or the device's), when the report knows it."""
        if self.advisor is not None and self.advisor.budget_bytes:
            return self.advisor.budget_bytes
        for rec in self.recommendations:
            if rec.budget_bytes:
                return int(rec.budget_bytes)
        return None

    # The report's own views: JSON (the contract) and pandas frames.
    def to_dict(self) -> dict[str, Any]:
        from memprof.model.codec import report_to_dict

        return report_to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        import json

        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str) -> None:
        from memprof.model.codec import save_report

        save_report(self, path)

    def steps_frame(self) -> Any:
        """The steps as a pandas DataFrame, one row per step."""
        from memprof.model.frames import steps_frame

        return steps_frame(self)

    def modules_frame(self) -> Any:
        """The modules as a pandas DataFrame, one row per module."""
        from memprof.model.frames import modules_frame

        return modules_frame(self)

    def findings_frame(self) -> Any:
        from memprof.model.frames import findings_frame

        return findings_frame(self)
