"""The report: typed dataclasses for everything memprof tells a user.

This module is the contract of ``../shared/spec/report.md`` in code. JSON conversion lives in
:mod:`memprof.report.json_io`; nothing here imports torch, so reports load anywhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

SCHEMA = "memprof.report/1"


class Status(str, enum.Enum):
    OK = "ok"
    ERROR = "error"
    OOM = "oom"
    INTERRUPTED = "interrupted"


class Category(str, enum.Enum):
    """What a byte of live tensor storage is for."""

    PARAMETERS = "parameters"
    GRADIENTS = "gradients"
    OPTIMIZER_STATE = "optimizer_state"
    ACTIVATIONS = "activations"
    OTHER = "other"


CATEGORIES: tuple[Category, ...] = tuple(Category)


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def is_diagnosis(self) -> bool:
        return self in (Severity.ERROR, Severity.WARNING)


class FindingKind(str, enum.Enum):
    ACCUMULATED_TENSOR = "accumulated_tensor"
    RETAINED_GRAPH = "retained_graph"
    MISSING_NO_GRAD = "missing_no_grad"
    LINGERING_TENSOR = "lingering_tensor"
    MEMORY_GROWTH = "memory_growth"
    FRAGMENTATION = "fragmentation"
    OOM = "oom"


class RecommendationKind(str, enum.Enum):
    BATCH_SIZE = "batch_size"
    MIXED_PRECISION = "mixed_precision"
    GRADIENT_CHECKPOINTING = "gradient_checkpointing"
    EMPTY_CACHE = "empty_cache"
    ALLOCATOR_CONFIG = "allocator_config"
    NO_GRAD = "no_grad"
    OPTIMIZER = "optimizer"


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
        for key, value in values.items():
            name = key.value if isinstance(key, Category) else str(key)
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


@dataclass
class ModuleRecord:
    name: str
    type: str
    parameter_bytes: int = 0
    activation_bytes: int = 0
    gradient_bytes: int = 0
    calls: int = 0


@dataclass
class Finding:
    kind: FindingKind
    severity: Severity
    message: str
    advice: str = ""
    file: str | None = None
    line: int | None = None
    variable: str | None = None
    bytes: int = 0
    step: int | None = None  # the step at which it was found
    ranks: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        if self.file is None:
            return "<run>"
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass
class Recommendation:
    kind: RecommendationKind
    message: str
    predicted_peak_bytes: int | None = None
    current: Any = None
    suggested: Any = None
    budget_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RankReport:
    rank: int
    peak_bytes: int
    steps: list[StepRecord] = field(default_factory=list)


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
    cuda: dict[str, Any] | None = None  # allocator counters (reserved, active, num_ooms, ...)
    oom: dict[str, Any] | None = None  # the post-mortem, when status is "oom"
    largest_tensors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # memprof's own problems, never the script's
    advisor: dict[str, Any] | None = None  # the model behind the predictions (see memprof.advise)

    @property
    def diagnoses(self) -> list[Finding]:
        return [f for f in self.findings if f.severity.is_diagnosis]

    def to_dict(self) -> dict[str, Any]:
        from memprof.report.json_io import report_to_dict

        return report_to_dict(self)

    def to_json(self, indent: int | None = 2) -> str:
        import json

        return json.dumps(self.to_dict(), indent=indent)

    def save(self, path: str) -> None:
        from memprof.report.json_io import save_report

        save_report(self, path)

    def steps_frame(self) -> Any:
        """The steps as a pandas DataFrame, one row per step."""
        from memprof.report.frames import steps_frame

        return steps_frame(self)

    def modules_frame(self) -> Any:
        """The modules as a pandas DataFrame, one row per module."""
        from memprof.report.frames import modules_frame

        return modules_frame(self)

    def findings_frame(self) -> Any:
        from memprof.report.frames import findings_frame

        return findings_frame(self)

    def summary(self, color: bool = False) -> str:
        from memprof.report.summary import render_summary

        return render_summary(self, color=color)
