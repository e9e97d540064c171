"""A report as CSV files: ``steps.csv``, ``modules.csv`` and ``findings.csv`` in DIR, the rows of
the report's pandas frames (:meth:`~memprof.model.report.Report.steps_frame` and the others)."""

from __future__ import annotations

import os

from memprof.model.report import Report

FILES = ("steps", "modules", "findings")


def write_csv(report: Report, path: str) -> None:
    """Write ``steps.csv``, ``modules.csv`` and ``findings.csv`` into the folder ``path`` (made if missing)."""
    os.makedirs(path, exist_ok=True)
    frames = {"steps": report.steps_frame(), "modules": report.modules_frame(), "findings": report.findings_frame()}
    for name in FILES:
        frames[name].to_csv(os.path.join(path, f"{name}.csv"), index=False)
