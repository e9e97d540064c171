"""memprof's vocabulary: the types every layer speaks, torch-free, importing nothing else of memprof.

- :mod:`~memprof.model.categories`: memory categories and the one table of their codes;
- :mod:`~memprof.model.findings`: findings and recommendations, with open kinds;
- :mod:`~memprof.model.report`: the report and its typed sections (the contract);
- :mod:`~memprof.model.codec`: the report as the contract's JSON, and back;
- :mod:`~memprof.model.frames`: the report as pandas DataFrames;
- :mod:`~memprof.model.run`: the run data the collectors produce and the doctor and advisor read.
"""

from memprof.model.categories import CATEGORIES, Category
from memprof.model.findings import Finding, FindingKind, Recommendation, RecommendationKind, Severity
from memprof.model.report import (
    SCHEMA,
    AdvisorModel,
    BatchFigures,
    Breakdown,
    Budget,
    CudaStats,
    DeviceInfo,
    ModuleRecord,
    OomReport,
    RankReport,
    ReplayFigures,
    Report,
    Status,
    StepRecord,
    TensorRecord,
)

__all__ = [
    "CATEGORIES", "SCHEMA", "AdvisorModel", "BatchFigures", "Breakdown", "Budget", "Category", "CudaStats",
    "DeviceInfo", "Finding", "FindingKind", "ModuleRecord", "OomReport", "RankReport", "Recommendation",
    "RecommendationKind", "ReplayFigures", "Report", "Severity", "Status", "StepRecord", "TensorRecord",
]
