"""memprof in IPython and Jupyter: ``%load_ext memprof``, then ``%%memprof`` and ``%memprof``.

``%%memprof [options]`` profiles the cell, ``%memprof [options] statement`` one statement; each
prints memprof's summary with its findings and recommendations, and returns the
:class:`~memprof.model.Report` (``report = _``, then ``report.steps_frame()``). Options:
``--budget SIZE`` (plan for a card: "24GiB"), ``--memory-limit SIZE`` (rehearse an out-of-memory),
``--json PATH``, ``--html PATH``, ``-q`` (no summary). The report is also kept in the user's
namespace as ``memprof_report``.

Known limitations:
- Code the cell calls that was defined in earlier cells is seen, as in a script; memory made by
  earlier cells and still held counts as it does at a script's start (before the first step).
- The terminal summary goes to the cell's output without colour.
"""

from __future__ import annotations

import sys
from typing import Any

try:
    from IPython.core.magic import Magics, line_cell_magic, magics_class
    from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
except ImportError as e:  # pragma: no cover - IPython is what loads this module
    raise ImportError("memprof's notebook magic needs IPython: pip install ipython") from e

from memprof.errors import MemprofError
from memprof.model import Report
from memprof.report.outputs import SUMMARY
from memprof.units import fmt_bytes


@magics_class
class MemprofMagics(Magics):
    @magic_arguments()
    @argument("--budget", metavar="SIZE", help="plan for a card of this size (\"24GiB\"): the batch size that fits")
    @argument("--memory-limit", metavar="SIZE", help="rehearse an out-of-memory at this size")
    @argument("--json", metavar="PATH", help="write the report as JSON")
    @argument("--html", metavar="PATH", help="write a self-contained HTML report")
    @argument("-q", "--quiet", action="store_true", help="print no summary (the report is still returned)")
    @argument("statement", nargs="*", help="the statement to profile (line magic)")
    @line_cell_magic
    def memprof(self, line: str, cell: str | None = None) -> Report | None:
        """Profile a cell (%%memprof) or a statement (%memprof stmt) and print what used memory."""
        args = parse_argstring(self.memprof, line)
        source = cell if cell is not None else " ".join(args.statement)
        if not source.strip():
            print("memprof: nothing to profile: %memprof STATEMENT, or %%memprof on a cell's first line",
                  file=sys.stderr)
            return None
        return self._profile(source, args)

    def _profile(self, source: str, args: Any) -> Report | None:
        from memprof.api import track

        shell = self.shell
        assert shell is not None
        transformed = shell.transform_cell(source)
        # Cached like a cell (``<ipython-input-N-...>``, its source in linecache): memprof reads
        # the lines of its findings from there.
        filename = shell.compile.cache(transformed, shell.execution_count, raw_code=source)
        code = shell.compile(transformed, filename, "exec")
        session = None
        try:
            with track(json=args.json, html=args.html, budget=args.budget, memory_limit=args.memory_limit,
                       name=filename) as session:
                exec(code, shell.user_ns)
        except MemprofError as e:
            print(f"memprof: error: {e}", file=sys.stderr)
            return None
        finally:
            report = session.report if session is not None else None
            if report is not None:
                shell.user_ns["memprof_report"] = report
                if not args.quiet:
                    SUMMARY.write(report, sys.stdout, color=False)
        return report


def short_repr(report: Report) -> str:
    """How a report shows as a cell's value: one line, the summary having been printed above it."""
    warnings = len(report.diagnoses)
    return (f"<memprof Report: {report.script} · {report.status.value} · {report.step_count} step{'s' if report.step_count != 1 else ''} · "
            f"peak {fmt_bytes(report.peak_bytes)} · {warnings} warning{'s' if warnings != 1 else ''} · "
            f"{len(report.recommendations)} recommendation{'s' if len(report.recommendations) != 1 else ''}>")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext memprof``: the magics, and a one-line display of a report as a cell's value."""
    ipython.register_magics(MemprofMagics)
    formatter = ipython.display_formatter.formatters["text/plain"]
    formatter.for_type(Report, lambda report, p, cycle: p.text(short_repr(report)))
