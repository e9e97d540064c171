"""What the doctor finds and what the advisor recommends."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from memprof.model.kinds import OpenEnum


class Severity(str, enum.Enum):
    """``error``: will or did run out of memory; ``warning``: wastes memory or grows; ``info``: a tip."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def is_diagnosis(self) -> bool:
        return self in (Severity.ERROR, Severity.WARNING)

    @property
    def rank(self) -> int:
        """The one severity order: 0 is the most severe."""
        return _RANK[self]

    @classmethod
    def parse(cls, value: str | None) -> Severity:
        try:
            return cls(value or "warning")
        except ValueError:  # a severity from a newer memprof: shown, counted as a tip
            return cls.INFO


_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


class FindingKind(OpenEnum):
    ACCUMULATED_TENSOR = "accumulated_tensor"
    RETAINED_GRAPH = "retained_graph"
    MISSING_NO_GRAD = "missing_no_grad"
    LINGERING_TENSOR = "lingering_tensor"
    MEMORY_GROWTH = "memory_growth"
    FRAGMENTATION = "fragmentation"
    OOM = "oom"


class RecommendationKind(OpenEnum):
    BATCH_SIZE = "batch_size"
    MIXED_PRECISION = "mixed_precision"
    GRADIENT_CHECKPOINTING = "gradient_checkpointing"
    EMPTY_CACHE = "empty_cache"
    ALLOCATOR_CONFIG = "allocator_config"
    NO_GRAD = "no_grad"
    OPTIMIZER = "optimizer"


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
