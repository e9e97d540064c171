"""pandas views of a report. pandas is imported only when a frame is asked for."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from memprof.model.categories import CATEGORIES

if TYPE_CHECKING:
    from memprof.model.report import Report


def steps_frame(report: Report) -> Any:
    import pandas as pd

    cols = ["index", "peak_bytes", "end_bytes", "batch_size", "seconds", "phase", "detailed"]
    # A detailed step's end by category, as columns (empty for watched steps).
    categories = [c.value for c in CATEGORIES]
    rows = []
    for s in report.steps:
        row = asdict(s)
        breakdown = row.pop("breakdown", None) or {}
        row.update({f"end_{c}_bytes": breakdown.get(c) for c in categories})
        rows.append(row)
    frame = pd.DataFrame(rows, columns=cols + [f"end_{c}_bytes" for c in categories])
    return frame.astype({f"end_{c}_bytes": "Int64" for c in categories})  # integers, <NA> where not measured


def modules_frame(report: Report) -> Any:
    import pandas as pd

    cols = ["name", "type", "parameter_bytes", "activation_bytes", "gradient_bytes", "calls"]
    return pd.DataFrame([asdict(m) for m in report.modules], columns=cols)


def findings_frame(report: Report) -> Any:
    import pandas as pd

    rows = [
        {"kind": f.kind.value, "severity": f.severity.value, "file": f.file, "line": f.line,
         "variable": f.variable, "bytes": f.bytes, "step": f.step, "message": f.message, "advice": f.advice}
        for f in report.findings
    ]
    cols = ["kind", "severity", "file", "line", "variable", "bytes", "step", "message", "advice"]
    return pd.DataFrame(rows, columns=cols)
