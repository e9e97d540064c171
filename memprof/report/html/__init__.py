"""A single self-contained HTML report: inline CSS, inline SVG charts, a few lines of inline JS.

Nothing is fetched from the network (no fonts, no CDN, no images). The page is the sections of
:mod:`~memprof.report.html.sections`, drawn with :mod:`~memprof.report.html.charts`; its style and
script are the package files ``assets/report.css`` and ``assets/report.js``, inlined when the page
is rendered.
"""

from __future__ import annotations

import functools
import os
from importlib import resources

from memprof.model import Report
from memprof.model.codec import write_atomic
from memprof.report.html import sections
from memprof.report.html.charts import esc

__all__ = ["render_html", "write_html"]

_SECTIONS = (
    sections.header,
    sections.oom,
    sections.findings,
    sections.recommendations,
    sections.timeline,
    sections.breakdown,
    sections.modules,
    sections.ranks,
    sections.largest_tensors,
    sections.allocator,
    sections.warnings,
)


@functools.cache
def _asset(name: str) -> str:
    return resources.files(__name__).joinpath(f"assets/{name}").read_text(encoding="utf-8")


def render_html(report: Report) -> str:
    """The whole report as one self-contained HTML page."""
    title = f"memprof: {os.path.basename(report.script) or 'report'}"
    footer = (f"<footer>memprof {esc(report.memprof_version)} &middot; {esc(report.schema)} &middot; "
              "a self-contained file: nothing is loaded from the network</footer>")
    # The assets are inlined after a newline, as the page has always had them.
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>\n{_asset('report.css')}</style></head><body><main>"
        + "".join(s for s in (section(report) for section in _SECTIONS) if s)
        + footer
        + f"</main><script>\n{_asset('report.js')}</script></body></html>\n"
    )


def write_html(report: Report, path: str | os.PathLike[str]) -> None:
    """Write the HTML report atomically (see :func:`memprof.model.codec.write_atomic`)."""
    write_atomic(path, render_html(report))
