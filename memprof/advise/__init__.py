"""The advisor: what to change, each with its predicted peak."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memprof.collect.timeline import RunData
from memprof.report.model import Recommendation


@dataclass
class Advice:
    recommendations: list[Recommendation] = field(default_factory=list)
    model: dict[str, Any] | None = None  # the figures the predictions rest on


def advise(data: RunData) -> Advice:
    return Advice()
