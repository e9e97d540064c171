"""Report files read back: the contract's JSON (:mod:`memprof.model.decode`), with errors a user can
read (:class:`~memprof.errors.MemprofError`). Writing: :data:`memprof.report.outputs.REPORTERS`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from memprof.errors import MemprofError
from memprof.model.decode import ReportFormatError, report_from_dict
from memprof.model.report import Report

__all__ = ["load_report", "report_from_data"]


def report_from_data(data: Any) -> Report:
    """A Report from parsed JSON, or a :class:`MemprofError` saying why it is not one."""
    try:
        return report_from_dict(data)
    except ReportFormatError as e:
        raise MemprofError(str(e)) from None


def load_report(path: str | os.PathLike[str]) -> Report:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise MemprofError(f"cannot read report {path}: {e.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise MemprofError(f"{path} is not JSON: {e}") from None
    return report_from_data(data)
