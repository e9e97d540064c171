"""The advisors, in the order the report lists their recommendations.

A new kind of advice is one file with a class that has a ``name`` and an ``advise`` method (the
:class:`~memprof.advise.advisor.Advisor` protocol), and its line here.
"""

from __future__ import annotations

from memprof.advise.advisor import Advisor
from memprof.advise.allocator import Allocator
from memprof.advise.batch_size import BatchSize
from memprof.advise.gradient_checkpointing import GradientCheckpointing
from memprof.advise.mixed_precision import MixedPrecision
from memprof.advise.optimizer import Optimizer

ADVISORS: list[Advisor] = [
    BatchSize(),
    MixedPrecision(),
    GradientCheckpointing(),
    Optimizer(),
    Allocator(),
]
