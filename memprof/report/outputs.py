"""Where a report goes: one :class:`Reporter` per file format, and :data:`REPORTERS`, the one registry
that ``memprof run``, ``memprof report`` and the API (``memprof.track``, ``@memprof.profile``) all
read. The CLI options (``--json PATH``) and the API keywords (``json=PATH``) come from it, so a new
format is a class with the :class:`Reporter` attributes plus its line in :data:`REPORTERS`.

The terminal summary is :data:`SUMMARY`, beside the registry rather than in it: it goes to a stream
(stderr for a run, stdout for ``memprof report``) with colour and encoding chosen for that stream,
not to a PATH, and the CLI shows it unasked (``memprof run -q`` silences it).

Known limitations: every file reporter takes one PATH (a folder for TensorBoard and CSV); a format
that needs more settings (a TensorBoard run name) must derive them from the report or the path.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, TextIO

from memprof.errors import MemprofError
from memprof.model.codec import save_report
from memprof.model.report import Report
from memprof.report.csv_files import write_csv
from memprof.report.html import write_html
from memprof.report.summary import render_summary
from memprof.report.tensorboard import write_tensorboard


@dataclass(frozen=True)
class Option:
    """The command-line option a reporter adds to ``memprof run`` and ``memprof report``."""

    flag: str  # "--json"
    help: str
    metavar: str = "PATH"


class Reporter(Protocol):
    """One file format of a report."""

    @property
    def name(self) -> str:
        """The registry key, the API keyword (``memprof.track(json=PATH)``) and the option's dest."""

    @property
    def label(self) -> str:
        """What the file is called on stderr: ``memprof: HTML report written to PATH``."""

    @property
    def option(self) -> Option: ...

    @property
    def best_effort(self) -> bool:
        """At the end of a run, a failure is a warning and the other outputs are still written."""

    def write(self, report: Report, path: str) -> None: ...


class JsonReporter:
    """The report as the contract's JSON (:mod:`memprof.model.codec`), written atomically."""

    name: ClassVar[str] = "json"
    label: ClassVar[str] = "report"
    option: ClassVar[Option] = Option("--json", "write the report as JSON to PATH")
    best_effort: ClassVar[bool] = False  # the report itself: its failure is the run's to tell

    def write(self, report: Report, path: str) -> None:
        save_report(report, path)


class HtmlReporter:
    """One self-contained HTML page (:mod:`memprof.report.html`)."""

    name: ClassVar[str] = "html"
    label: ClassVar[str] = "HTML report"
    option: ClassVar[Option] = Option("--html", "write a self-contained HTML report to PATH")
    best_effort: ClassVar[bool] = True

    def write(self, report: Report, path: str) -> None:
        write_html(report, path)


class TensorBoardReporter:
    """TensorBoard event files: per-step scalars, findings as text (:mod:`memprof.report.tensorboard`)."""

    name: ClassVar[str] = "tensorboard"
    label: ClassVar[str] = "TensorBoard log"
    requires: ClassVar[str] = "tensorboard"  # an optional dependency: the module it imports
    option: ClassVar[Option] = Option("--tensorboard", "write per-step memory scalars and the findings as "
                                      "TensorBoard event files into DIR (needs tensorboard)", "DIR")
    best_effort: ClassVar[bool] = True

    def write(self, report: Report, path: str) -> None:
        write_tensorboard(report, path)


class CsvReporter:
    """CSV files of the steps, modules and findings (:mod:`memprof.report.csv_files`)."""

    name: ClassVar[str] = "csv"
    label: ClassVar[str] = "CSV files"
    option: ClassVar[Option] = Option("--csv", "write steps.csv, modules.csv and findings.csv into DIR", "DIR")
    best_effort: ClassVar[bool] = True

    def write(self, report: Report, path: str) -> None:
        write_csv(report, path)


REPORTERS: list[Reporter] = [JsonReporter(), HtmlReporter(), TensorBoardReporter(), CsvReporter()]


class TerminalSummary:
    """The summary for a person at a terminal (:func:`memprof.report.summary.render_summary`)."""

    name: ClassVar[str] = "summary"  # the API keyword: memprof.track(summary=True)

    def write(self, report: Report, stream: TextIO, *, color: bool, unicode: bool = True) -> None:
        stream.write(render_summary(report, color=color, unicode=unicode))
        stream.flush()


SUMMARY = TerminalSummary()


def requested(paths: Mapping[str, str | None]) -> list[tuple[Reporter, str]]:
    """The reporters asked for in ``paths`` (name -> PATH or None), in registry order."""
    return [(r, path) for r in REPORTERS if (path := paths.get(r.name))]


def write_files(report: Report, paths: Mapping[str, str | None]) -> list[str]:
    """Write every requested file; one that cannot be written is a :class:`MemprofError`, so that
    a conversion (``memprof report``) fails in one line. Returns the paths written."""
    written = []
    for reporter, path in requested(paths):
        try:
            reporter.write(report, path)
        except OSError as e:
            raise MemprofError(f"cannot write {path}: {e.strerror or e}") from None
        written.append(path)
    return written


def write_outputs(report: Report, paths: Mapping[str, str | None], *, summary: bool) -> None:
    """The end of a profiled run (``memprof run``, ``memprof.track``): every requested file, then,
    with ``summary``, the terminal summary on stderr and one line per file written.

    A best-effort reporter's failure is a warning; any other's is raised, for the caller to tell."""
    written: list[tuple[Reporter, str]] = []
    for reporter, path in requested(paths):
        if not reporter.best_effort:
            reporter.write(report, path)
            written.append((reporter, path))
            continue
        try:
            reporter.write(report, path)
        except Exception as e:  # an output must never cost the run its report
            print(f"memprof: warning: could not write the {reporter.label}: {e}", file=sys.stderr)
        else:
            written.append((reporter, path))
    if not summary:
        return
    try:
        SUMMARY.write(report, sys.stderr, color=sys.stderr.isatty())
    except Exception as e:  # the peak must still reach the user
        sys.stderr.write(f"memprof: peak {report.peak_bytes} bytes ({e!r} while writing the summary)\n")
    for reporter, path in written:
        sys.stderr.write(f"memprof: {reporter.label} written to {path}\n")
