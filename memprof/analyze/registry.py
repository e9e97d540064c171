"""The detectors the doctor runs, in this order (the order of their findings at the same step).

Adding a finding kind takes two steps:

1. write ``memprof/analyze/<kind>.py``: a subclass of :class:`~memprof.analyze.base.BaseDetector`
   with ``kind = FindingKind("<kind>")`` (kinds are open: a new one needs no change to the model)
   and the events it reacts to;
2. add the class to :data:`DETECTORS`.
"""

from __future__ import annotations

from memprof.analyze.accumulated_tensor import AccumulatedTensorDetector
from memprof.analyze.base import Detector
from memprof.analyze.fragmentation import FragmentationDetector
from memprof.analyze.lingering_tensor import LingeringTensorDetector
from memprof.analyze.memory_growth import MemoryGrowthDetector
from memprof.analyze.missing_no_grad import MissingNoGradDetector
from memprof.analyze.oom import OomDetector
from memprof.analyze.retained_graph import RetainedGraphDetector

DETECTORS: tuple[type[Detector], ...] = (
    AccumulatedTensorDetector,
    RetainedGraphDetector,
    MissingNoGradDetector,
    LingeringTensorDetector,
    MemoryGrowthDetector,  # reads the findings so far: after the detectors it defers to
    FragmentationDetector,
    OomDetector,
)
