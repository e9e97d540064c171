"""A single self-contained HTML report: inline CSS, inline SVG charts, a few lines of inline JS.

Nothing is fetched from the network (no fonts, no CDN, no images). Every string that comes from
the report is escaped. Long runs are downsampled for drawing (at most ``MAX_POINTS`` points per
line), so a 10,000-step report renders in milliseconds and stays small.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

from memprof.report.json_io import write_atomic
from memprof.report.model import CATEGORIES, Category, Finding, Report, Severity, Status, StepRecord
from memprof.report.summary import (
    OOM_LABELS,
    budget_bytes,
    byte_items,
    device_text,
    display_path,
    fmt_pct,
    fmt_seconds,
    fmt_shape,
    fmt_value,
    oom_location,
    oom_source,
    reserved_bytes,
    sorted_findings,
    status_text,
)
from memprof.units import fmt_bytes

MAX_POINTS = 600
MAX_MODULES = 1000
MAX_TENSORS = 50
MAX_HELD_ROWS = 12

CATEGORY_COLORS: dict[Category, str] = {
    Category.PARAMETERS: "#4c78a8",
    Category.GRADIENTS: "#f58518",
    Category.OPTIMIZER_STATE: "#b279a2",
    Category.ACTIVATIONS: "#54a24b",
    Category.OTHER: "#9d9d9d",
}


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _nice(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 (times a power of ten) that is >= value."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    base = 10.0**exp
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * base >= value * (1 - 1e-9):
            return m * base
    return 10.0 * base


def byte_ticks(top: float, count: int = 5) -> tuple[list[float], float, str]:
    """Tick values (bytes) for an axis 0..top, and the unit they are labelled in."""
    top = max(top, 1.0)
    unit, name = 1.0, "B"
    for k, label in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if top >= 1024**k:
            unit, name = float(1024**k), label
            break
    step_units = _nice(top / unit / count)
    if name == "B":
        step_units = max(1.0, math.ceil(step_units))
    step = step_units * unit
    n = max(1, math.ceil(top / step - 1e-9))
    return [i * step for i in range(n + 1)], unit, name


def _tick_label(value: float, unit: float, name: str) -> str:
    return f"{value / unit:g} {name}" if value else "0"


def index_ticks(lo: int, hi: int, count: int = 8) -> list[int]:
    if hi <= lo:
        return [lo]
    step = max(1, int(_nice((hi - lo) / count)))
    first = math.ceil(lo / step) * step
    return list(range(first, hi + 1, step))


def downsample(steps: Sequence[StepRecord], max_points: int = MAX_POINTS) -> list[tuple[int, int, int, int, int]]:
    """Buckets of consecutive steps: (first index, last index, max peak, max end, min end)."""
    n = len(steps)
    if n == 0:
        return []
    size = max(1, math.ceil(n / max_points))
    out = []
    for start in range(0, n, size):
        chunk = steps[start:start + size]
        ends = [s.end_bytes for s in chunk]
        out.append((chunk[0].index, chunk[-1].index, max(s.peak_bytes for s in chunk), max(ends), min(ends)))
    return out


# ----------------------------------------------------------------------------------------- charts


def steps_chart(steps: Sequence[StepRecord], budget: int | None = None, run_peak: int | None = None,
                width: int = 1000, height: int = 320, empty_note: str = "") -> str:
    """SVG line chart of peak and end-of-step bytes per step, the peak marked, the budget dashed.

    ``run_peak``: the run's peak, drawn as a dotted line when it lies above every step's peak (it
    happened outside the recorded steps: at set-up, in an evaluation, or in the step that failed).
    """
    if not steps:
        note = empty_note or ("No steps were recorded: memprof counts a step at each optimizer step "
                              "(or each root-module call of an evaluation loop), and this run had none.")
        return f'<p class="muted">{esc(note)}</p>'
    ml, mr, mt, mb = 74, 20, 18, 38
    pw, ph = width - ml - mr, height - mt - mb
    buckets = downsample(steps)
    bucket_size = max(1, math.ceil(len(steps) / MAX_POINTS))
    top_data = max(b[2] for b in buckets)
    show_budget = budget is not None and 0 < budget <= 2.5 * max(top_data, 1)
    show_run_peak = run_peak is not None and run_peak > top_data
    top = max(top_data, budget if (show_budget and budget) else 0, run_peak if show_run_peak and run_peak else 0, 1)
    ticks, unit, uname = byte_ticks(top * 1.05)
    ymax = ticks[-1]
    lo_i, hi_i = steps[0].index, steps[-1].index
    if hi_i == lo_i:
        x0, x1 = lo_i - 0.5, hi_i + 0.5
    else:
        x0, x1 = float(lo_i), float(hi_i)

    def x(i: float) -> float:
        return ml + (i - x0) / (x1 - x0) * pw

    def y(v: float) -> float:
        return mt + ph - (v / ymax) * ph

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="memory per step" preserveAspectRatio="xMidYMid meet">']
    for t in ticks:
        yy = y(t)
        parts.append(f'<line class="grid" x1="{ml}" x2="{ml + pw}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
                     f'<text class="tick" x="{ml - 8}" y="{yy + 4:.1f}" text-anchor="end">'
                     f"{esc(_tick_label(t, unit, uname))}</text>")
    for i in index_ticks(lo_i, hi_i):
        xx = x(i)
        parts.append(f'<line class="xtick" x1="{xx:.1f}" x2="{xx:.1f}" y1="{mt + ph}" y2="{mt + ph + 5}"/>'
                     f'<text class="tick" x="{xx:.1f}" y="{mt + ph + 19}" text-anchor="middle">{i}</text>')
    parts.append(f'<text class="axis-label" x="{ml + pw / 2:.0f}" y="{height - 3}" text-anchor="middle">step</text>')

    # evaluation phases as shaded bands behind the lines
    runs: list[tuple[int, int]] = []
    for st in steps:
        if st.phase != "eval":
            continue
        if runs and runs[-1][1] == st.index - 1:
            runs[-1] = (runs[-1][0], st.index)
        else:
            runs.append((st.index, st.index))
    show_eval = 0 < len(runs) <= 300
    if show_eval:
        half = 0.5 * pw / max(1.0, x1 - x0) if hi_i != lo_i else pw / 2
        for first_i, last_i in runs:
            xa, xb = max(ml, x(first_i) - half), min(ml + pw, x(last_i) + half)
            parts.append(f'<rect class="eval-band" x="{xa:.1f}" y="{mt}" width="{max(1.0, xb - xa):.1f}" '
                         f'height="{ph}"/>')

    def mid(b: tuple[int, int, int, int, int]) -> float:
        return (b[0] + b[1]) / 2 if bucket_size > 1 else float(b[0])

    peak_pts = " ".join(f"{x(mid(b)):.1f},{y(b[2]):.1f}" for b in buckets)
    end_pts = " ".join(f"{x(mid(b)):.1f},{y(b[3]):.1f}" for b in buckets)
    if len(buckets) > 1:
        first, last = buckets[0], buckets[-1]
        area = f"{x(mid(first)):.1f},{y(0):.1f} {peak_pts} {x(mid(last)):.1f},{y(0):.1f}"
        parts.append(f'<polygon class="area" points="{area}"/>')
        parts.append(f'<polyline class="line-peak" points="{peak_pts}"/>')
        parts.append(f'<polyline class="line-end" points="{end_pts}"/>')
    if len(buckets) <= 80:
        for b in buckets:
            parts.append(f'<circle class="dot-peak" cx="{x(mid(b)):.1f}" cy="{y(b[2]):.1f}" r="3"/>'
                         f'<circle class="dot-end" cx="{x(mid(b)):.1f}" cy="{y(b[3]):.1f}" r="2.5"/>')
    if show_budget and budget:
        yb = y(budget)
        parts.append(f'<line class="budget" x1="{ml}" x2="{ml + pw}" y1="{yb:.1f}" y2="{yb:.1f}"/>'
                     f'<text class="budget-label" x="{ml + pw - 4}" y="{yb - 6:.1f}" text-anchor="end">'
                     f"budget {esc(fmt_bytes(budget))}</text>")
    if show_run_peak and run_peak:
        yr = y(run_peak)
        parts.append(f'<line class="run-peak" x1="{ml}" x2="{ml + pw}" y1="{yr:.1f}" y2="{yr:.1f}"/>'
                     f'<text class="run-peak-label" x="{ml + 6}" y="{yr - 6:.1f}">'
                     f"run peak {esc(fmt_bytes(run_peak))} (outside the recorded steps)</text>")
    # the peak step, exactly (not its bucket)
    ps = max(steps, key=lambda s: s.peak_bytes)
    px, py = x(ps.index), y(ps.peak_bytes)
    anchor = "end" if px > ml + pw * 0.7 else "start"
    dx = -10 if anchor == "end" else 10
    ty = py - 10 if py > mt + 24 else py + 22
    parts.append(f'<circle class="peak-marker" cx="{px:.1f}" cy="{py:.1f}" r="6"/>'
                 f'<text class="peak-label" x="{px + dx:.1f}" y="{ty:.1f}" text-anchor="{anchor}">'
                 f"{'highest step ' if show_run_peak else ''}peak {esc(fmt_bytes(ps.peak_bytes))} at step {ps.index}</text>")
    # hover targets: one transparent column per drawn point, with a native tooltip
    col_w = pw / max(1, len(buckets))
    for b in buckets:
        label = f"step {b[0]}" if b[0] == b[1] else f"steps {b[0]}-{b[1]}"
        tip = f"{label}: peak {fmt_bytes(b[2])}, end {fmt_bytes(b[3])}"
        cx = x(mid(b))
        parts.append(f'<rect class="hover" x="{cx - col_w / 2:.1f}" y="{mt}" width="{col_w:.1f}" height="{ph}">'
                     f"<title>{esc(tip)}</title></rect>")
    parts.append(f'<line class="axis" x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}"/>')
    parts.append("</svg>")
    legend = ['<div class="legend"><span><i class="sw sw-peak"></i>peak during the step</span>'
              '<span><i class="sw sw-end"></i>live at the end of the step</span>']
    if show_eval:
        legend.append('<span><i class="sw sw-eval"></i>evaluation steps</span>')
    if show_budget and budget:
        legend.append('<span><i class="sw sw-budget"></i>budget</span>')
    elif budget:
        legend.append(f'<span class="muted">budget {esc(fmt_bytes(budget))} (off the scale, '
                      f"{esc(fmt_pct(top_data, budget))} used at most)</span>")
    if bucket_size > 1:
        legend.append(f'<span class="muted">{len(steps):,} steps drawn as {len(buckets)} points '
                      f"(the largest value of every {bucket_size} steps)</span>")
    legend.append("</div>")
    return "".join(parts) + "".join(legend)


def breakdown_chart(report: Report, width: int = 1000, height: int = 44) -> str:
    bd = report.breakdown_at_peak
    total = bd.total
    if total <= 0:
        return '<p class="muted">No breakdown by category is available for this report.</p>'
    parts = [f'<svg class="bar" viewBox="0 0 {width} {height}" role="img" aria-label="breakdown at peak" '
             f'preserveAspectRatio="none"><clipPath id="bd-clip"><rect width="{width}" height="{height}" rx="8"/>'
             f'</clipPath><g clip-path="url(#bd-clip)">']
    xpos = 0.0
    for cat in CATEGORIES:
        value = bd.get(cat)
        if value <= 0:
            continue
        w = value / total * width
        tip = f"{cat.value.replace('_', ' ')}: {fmt_bytes(value)} ({fmt_pct(value, total)})"
        parts.append(f'<rect x="{xpos:.2f}" y="0" width="{w:.2f}" height="{height}" '
                     f'fill="{CATEGORY_COLORS[cat]}"><title>{esc(tip)}</title></rect>')
        xpos += w
    parts.append("</g></svg>")
    rows = []
    for cat in CATEGORIES:
        value = bd.get(cat)
        rows.append(
            f'<tr><td><i class="sw" style="background:{CATEGORY_COLORS[cat]}"></i>{esc(cat.value.replace("_", " "))}</td>'
            f'<td class="num">{esc(fmt_bytes(value))}</td><td class="num">{esc(fmt_pct(value, total))}</td></tr>'
        )
    table = ('<table class="compact breakdown"><thead><tr><th>category</th><th class="num">bytes</th>'
             f'<th class="num">share</th></tr></thead><tbody>{"".join(rows)}</tbody>'
             f'<tfoot><tr><td>total</td><td class="num">{esc(fmt_bytes(total))}</td><td></td></tr></tfoot></table>')
    return "".join(parts) + table


def sparkline(steps: Sequence[StepRecord], ymax: int, width: int = 160, height: int = 28) -> str:
    if not steps or ymax <= 0:
        return ""
    buckets = downsample(steps, 80)
    n = len(buckets)
    pts = " ".join(
        f"{(i / max(1, n - 1)) * (width - 4) + 2:.1f},{height - 2 - b[2] / ymax * (height - 4):.1f}"
        for i, b in enumerate(buckets)
    )
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
            f'<polyline class="line-peak" points="{pts}"/></svg>')


# ----------------------------------------------------------------------------------------- sections


def _where(file: Any, line: Any) -> str:
    if not file:
        return ""
    shown = display_path(str(file))
    text = f"{shown}:{line}" if line else shown
    return f'<code class="loc" title="{esc(file)}">{esc(text)}</code>'


def _meter(part: float, whole: float, levels: bool = True) -> str:
    """A small bar of ``part / whole``; with ``levels``, amber above 85% and red above 100%."""
    if whole <= 0:
        return ""
    frac = max(0.0, min(1.0, part / whole))
    cls = "" if not levels else "meter-bad" if part > whole else "meter-warn" if frac > 0.85 else ""
    return f'<div class="meter {cls}"><div style="width:{frac * 100:.1f}%"></div></div>'


def _header(report: Report) -> str:
    cmd = " ".join([display_path(report.script) or "<unknown>", *report.argv])
    status_cls = {Status.OK: "ok", Status.ERROR: "bad", Status.OOM: "bad", Status.INTERRUPTED: "warn"}[report.status]
    if report.status is Status.OK and report.exit_code not in (None, 0):
        status_cls = "warn"
    meta = [device_text(report)]
    if report.duration_seconds:
        meta.append(fmt_seconds(report.duration_seconds))
    if report.steps:
        n_eval = sum(1 for s in report.steps if s.phase == "eval")
        meta.append(f"{len(report.steps):,} step{'s' if len(report.steps) != 1 else ''}"
                    + (f" ({n_eval:,} eval)" if n_eval else ""))
    if report.memprof_version:
        meta.append(f"memprof {report.memprof_version}")
    cards = []
    peak_note = ""
    if report.steps:
        ps = max(report.steps, key=lambda s: s.peak_bytes)
        if ps.peak_bytes == report.peak_bytes:
            peak_note = f"at step {ps.index}"
    cards.append(_card("peak memory", fmt_bytes(report.peak_bytes), peak_note))
    budget = budget_bytes(report)
    total = report.device.total_bytes
    if budget:
        cards.append(_card("of the budget", fmt_pct(report.peak_bytes, budget), f"budget {fmt_bytes(budget)}",
                           _meter(report.peak_bytes, budget)))
    if total and total != budget:
        cards.append(_card("of the device", fmt_pct(report.peak_bytes, total), f"{fmt_bytes(total)} total",
                           _meter(report.peak_bytes, total)))
    reserved = reserved_bytes(report)
    if reserved:
        cards.append(_card(reserved[0], fmt_bytes(reserved[1]), "by the caching allocator"))
    if len(report.steps) >= 2:
        growth = report.steps[-1].end_bytes - report.steps[0].end_bytes
        cards.append(_card("end-of-step growth", fmt_bytes(growth, signed=True),
                           f"step {report.steps[0].index} to {report.steps[-1].index}"))
    n_err = sum(1 for f in report.findings if f.severity is Severity.ERROR)
    n_warn = sum(1 for f in report.findings if f.severity is Severity.WARNING)
    n_info = len(report.findings) - n_err - n_warn
    tips = f" · {n_info} tip{'s' if n_info != 1 else ''}" if n_info else ""
    if n_err or n_warn:
        counts = ", ".join(f"{n} {w}{'s' if n != 1 else ''}" for n, w in ((n_err, "error"), (n_warn, "warning")) if n)
        cards.append(_card("problems", str(n_err + n_warn), counts + tips, cls="card-bad" if n_err else "card-warn"))
    else:
        cards.append(_card("problems", "none", "no errors or warnings" + tips, cls="card-ok"))
    error = ""
    if report.error and report.status is not Status.OK:
        error = f'<pre class="error">{esc(report.error.strip())}</pre>'
    return (
        f'<header><div class="brand">memprof report</div>'
        f'<h1><code>{esc(cmd)}</code> <span class="status status-{status_cls}">{esc(status_text(report))}</span></h1>'
        f'<div class="meta">{" &middot; ".join(esc(m) for m in meta)}</div>{error}'
        f'<div class="cards">{"".join(cards)}</div></header>'
    )


def _card(label: str, value: str, note: str = "", extra: str = "", cls: str = "") -> str:
    return (f'<div class="card {cls}"><div class="card-label">{esc(label)}</div>'
            f'<div class="card-value">{esc(value)}</div>{extra}<div class="card-note">{esc(note)}</div></div>')


def _finding_html(f: Finding) -> str:
    sev = f.severity.value
    bits = [f'<span class="badge badge-{sev}">{esc(sev)}</span>', f'<span class="kind">{esc(f.kind.value)}</span>']
    where = _where(f.file, f.line)
    if where:
        bits.append(where)
    if f.variable:
        bits.append(f'<span class="var">variable <code>{esc(f.variable)}</code></span>')
    if f.bytes:
        bits.append(f'<span class="bytes">{esc(fmt_bytes(f.bytes))}</span>')
    facts = []
    if f.step is not None:
        facts.append(f"found at step {f.step}")
    if f.ranks:
        facts.append(("rank " if len(f.ranks) == 1 else "ranks ") + ", ".join(str(r) for r in f.ranks))
    body = [f'<div class="finding finding-{sev}"><div class="finding-head">{"".join(bits)}</div>',
            f'<p class="message">{esc(f.message)}</p>']
    if f.advice:
        body.append(f'<div class="fix"><b>fix</b> {esc(f.advice)}</div>')
    if facts:
        body.append(f'<div class="facts">{esc(" · ".join(facts))}</div>')
    body.append("</div>")
    return "".join(body)


def _findings(report: Report) -> str:
    diagnoses = sorted_findings(f for f in report.findings if f.severity.is_diagnosis)
    infos = sorted_findings(f for f in report.findings if not f.severity.is_diagnosis)
    out = ['<section id="findings"><h2>Findings</h2>']
    if diagnoses:
        out.extend(_finding_html(f) for f in diagnoses)
    elif report.status is Status.OOM:
        out.append('<p class="muted">No finding besides the out-of-memory error.</p>')
    else:
        out.append('<p class="clean">No memory problems found: no errors or warnings.</p>')
    if infos:
        out.append(f"<h3>Tips ({len(infos)})</h3>")
        out.extend(_finding_html(f) for f in infos)
    out.append("</section>")
    return "".join(out)


def _recommendations(report: Report) -> str:
    if not report.recommendations:
        return ""
    budget = budget_bytes(report)
    rows = []
    for r in report.recommendations:
        change = ""
        if r.current is not None and r.suggested is not None:
            change = f"{fmt_value(r.current)} \u2192 {fmt_value(r.suggested)}"
        elif r.suggested is not None:
            change = fmt_value(r.suggested)
        pred = ""
        if r.predicted_peak_bytes is not None:
            b = r.budget_bytes or budget
            pred = f'<span class="num">{esc(fmt_bytes(r.predicted_peak_bytes))}</span>'
            if b:
                pred += f' <span class="muted">({esc(fmt_pct(r.predicted_peak_bytes, b))} of {esc(fmt_bytes(b))})</span>'
                pred += _meter(r.predicted_peak_bytes, b)
        rows.append(f'<tr><td><span class="kind">{esc(r.kind.value)}</span></td><td>{esc(r.message)}</td>'
                    f'<td class="nowrap">{f"<code>{esc(change)}</code>" if change else ""}</td><td>{pred}</td></tr>')
    return ('<section id="recommendations"><h2>Recommendations</h2><table><thead><tr><th>kind</th><th>advice</th>'
            '<th>change</th><th>predicted peak</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></section>')


def _tensors_table(tensors: Iterable[dict[str, Any]]) -> str:
    """Tensors (or allocator blocks) as a sortable table; columns no row fills are left out."""
    rows_in = [t for t in list(tensors)[:MAX_TENSORS] if isinstance(t, dict)]
    cols = [c for c in ("shape", "dtype", "category", "module") if any(t.get(c) not in (None, "", []) for t in rows_in)]
    rows = []
    for t in rows_in:
        size = t.get("bytes")
        num = size if isinstance(size, (int, float)) else 0
        cells = [f'<td class="num" data-v="{esc(num)}">{esc(fmt_bytes(num) if isinstance(size, (int, float)) else "")}</td>']
        for c in cols:
            value = t.get(c)
            if c == "shape":
                cells.append(f"<td><code>{esc(fmt_shape(value))}</code></td>" if value not in (None, "") else "<td></td>")
            elif c == "module":
                cells.append(f"<td><code>{esc(value)}</code></td>" if value else "<td></td>")
            else:
                cells.append(f"<td>{esc(value or '')}</td>")
        cells.append(f"<td>{_where(t.get('file'), t.get('line'))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = '<th class="num">bytes</th>' + "".join(f"<th>{esc(c)}</th>" for c in cols) + "<th>allocated at</th>"
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _held_table(items: list[tuple[str, int]], what: str, colors: bool = False) -> str:
    """``(name, bytes)`` pairs as a small table with bars (category colours when ``colors``)."""
    top = max((b for _, b in items), default=1) or 1
    rows = []
    for name, size in items[:MAX_HELD_ROWS]:
        label = name.replace("_", " ") if colors else name
        rows.append(f'<tr><td>{esc(label)}</td><td class="num">{esc(fmt_bytes(size))}</td>'
                    f'<td><div class="cellbar wide"><div style="width:{size / top * 100:.1f}%'
                    f'{_bg(name) if colors else ""}"></div></div></td></tr>')
    more = f'<p class="muted">{len(items) - MAX_HELD_ROWS:,} more not shown.</p>' if len(items) > MAX_HELD_ROWS else ""
    return (f'<table class="compact"><thead><tr><th>{esc(what)}</th><th class="num">bytes</th><th></th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>{more}')


def _bg(category: str) -> str:
    cat = next((c for c in CATEGORIES if c.value == category), None)
    return f";background:{CATEGORY_COLORS[cat]}" if cat is not None else ""


def _oom(report: Report) -> str:
    if report.status is not Status.OOM and not report.oom:
        return ""
    oom = report.oom or {}
    facts = []
    for key, value in oom.items():
        if key in ("message", "file", "line", "source") or isinstance(value, (dict, list)) or value in (None, ""):
            continue
        label = OOM_LABELS.get(key, key.replace("_bytes", "").replace("_", " "))
        shown = fmt_bytes(value) if key.endswith("_bytes") and isinstance(value, (int, float)) else fmt_value(value)
        facts.append(f"<div><dt>{esc(label)}</dt><dd>{esc(shown)}</dd></div>")
    out = ['<section id="oom" class="oom"><h2>Out of memory: post-mortem</h2>']
    if oom.get("source"):
        out.append(f'<p class="muted">source: {esc(oom_source(oom["source"]))}</p>')
    if oom.get("message"):
        out.append(f"<p>{esc(oom['message'])}</p>")
    file, line = oom_location(report)
    where = _where(file, line)
    if where:
        out.append(f"<p>failed at {where}</p>")
    if facts:
        out.append(f'<dl class="facts-grid">{"".join(facts)}</dl>')
    held = []
    for key, value in oom.items():
        if key == "largest_allocations":
            continue
        items = byte_items(value)
        if items and isinstance(value, dict):
            what = {"breakdown": "held by category", "by_module": "held by module"}.get(key, key.replace("_", " "))
            held.append(f"<div>{_held_table(items, what, colors=key == 'breakdown')}</div>")
    if held:
        out.append(f'<div class="held">{"".join(held)}</div>')
    for key, value in oom.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(f"<h3>{esc(key.replace('_', ' '))} when it failed</h3>{_tensors_table(value)}")
    if report.largest_tensors:
        out.append(f"<h3>Largest live tensors</h3>{_tensors_table(report.largest_tensors)}")
    out.append("</section>")
    return "".join(out)


def _largest(report: Report) -> str:
    if report.status is Status.OOM or report.oom or not report.largest_tensors:
        return ""
    return f'<section id="tensors"><h2>Largest tensors</h2>{_tensors_table(report.largest_tensors)}</section>'


def _modules(report: Report) -> str:
    if not report.modules:
        return ""
    mods = sorted(report.modules, key=lambda m: m.activation_bytes, reverse=True)
    shown = mods[:MAX_MODULES]
    top_act = max(1, max(m.activation_bytes for m in shown))
    rows = []
    for m in shown:
        frac = m.activation_bytes / top_act * 100
        rows.append(
            f"<tr><td><code>{esc(m.name or '<root>')}</code></td><td>{esc(m.type)}</td>"
            f'<td class="num" data-v="{m.parameter_bytes}">{esc(fmt_bytes(m.parameter_bytes))}</td>'
            f'<td class="num" data-v="{m.activation_bytes}"><div class="cellbar"><div style="width:{frac:.1f}%">'
            f"</div></div>{esc(fmt_bytes(m.activation_bytes))}</td>"
            f'<td class="num" data-v="{m.gradient_bytes}">{esc(fmt_bytes(m.gradient_bytes))}</td>'
            f'<td class="num" data-v="{m.calls}">{m.calls:,}</td></tr>'
        )
    more = ""
    if len(mods) > len(shown):
        more = f'<p class="muted">{len(mods) - len(shown):,} smaller modules are not shown.</p>'
    return ('<section id="modules"><h2>Modules</h2><p class="muted">Click a column to sort.</p>'
            '<table class="sortable"><thead><tr><th>module</th><th>type</th><th class="num">parameters</th>'
            '<th class="num">activations</th><th class="num">gradients</th><th class="num">calls</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>{more}</section>')


def _ranks(report: Report) -> str:
    if not report.ranks:
        return ""
    top = max(r.peak_bytes for r in report.ranks) or 1
    spark_top = max([s.peak_bytes for r in report.ranks for s in r.steps] or [top])
    rows = []
    for r in sorted(report.ranks, key=lambda r: r.rank):
        rows.append(
            f'<tr><td class="num" data-v="{r.rank}">{r.rank}</td>'
            f'<td class="num" data-v="{r.peak_bytes}">{esc(fmt_bytes(r.peak_bytes))}</td>'
            f"<td>{_meter(r.peak_bytes, top, levels=False)}</td>"
            f'<td class="num" data-v="{len(r.steps)}">{len(r.steps):,}</td>'
            f"<td>{sparkline(r.steps, spark_top)}</td></tr>"
        )
    return ('<section id="ranks"><h2>Ranks</h2><table class="sortable"><thead><tr><th class="num">rank</th>'
            '<th class="num">peak</th><th>relative to the largest</th><th class="num">steps</th>'
            f'<th>peak per step</th></tr></thead><tbody>{"".join(rows)}</tbody></table></section>')


_CUDA_SKIP = {"source", "allocator_settings"}


def _allocator(report: Report) -> str:
    """The CUDA allocator's figures (``report.cuda``), whatever keys the collector or importer wrote."""
    if not isinstance(report.cuda, dict) or not report.cuda:
        return ""
    facts = []
    for key, value in report.cuda.items():
        if key in _CUDA_SKIP or isinstance(value, (dict, list)) or value is None:
            continue
        label = key.replace("_bytes", "").replace("_", " ")
        shown = fmt_bytes(value) if key.endswith("_bytes") and isinstance(value, (int, float)) else fmt_value(value)
        facts.append(f"<div><dt>{esc(label)}</dt><dd>{esc(shown)}</dd></div>")
    settings = report.cuda.get("allocator_settings")
    extra = ""
    if isinstance(settings, dict) and settings:
        pairs = ", ".join(f"{k}={fmt_value(v)}" for k, v in settings.items())
        extra = f'<p class="muted">allocator settings: <code>{esc(pairs)}</code></p>'
    if not facts and not extra:
        return ""
    return (f'<section id="allocator"><h2>CUDA caching allocator</h2><dl class="facts-grid">{"".join(facts)}</dl>'
            f"{extra}</section>")


def _warnings(report: Report) -> str:
    if not report.warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in report.warnings)
    return ('<section id="warnings"><h2>memprof\'s own warnings</h2><p class="muted">About the measurement, '
            f"not about your script.</p><ul>{items}</ul></section>")


# ----------------------------------------------------------------------------------------- page

_CSS = """
:root{--bg:#f6f7f9;--panel:#fff;--fg:#1d2330;--muted:#667085;--line:#e3e6ec;--accent:#3b6fd8;
--accent-soft:rgba(59,111,216,.12);--end:#8a94a6;--bad:#d92d20;--warn:#dc8a00;--ok:#12a150;--info:#2e90fa;
--code:#f0f2f5;--eval:rgba(245,133,24,.10)}
@media (prefers-color-scheme: dark){:root{--bg:#0f1218;--panel:#171b23;--fg:#e6e8ee;--muted:#98a2b3;
--line:#2a303c;--accent:#6c9cff;--accent-soft:rgba(108,156,255,.16);--end:#7d869a;--code:#222834;
--eval:rgba(245,133,24,.14)}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
Helvetica,Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:28px 28px 48px}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em}
code{background:var(--code);padding:1px 5px;border-radius:4px}
h1{font-size:22px;margin:4px 0 6px;font-weight:650;display:flex;flex-wrap:wrap;gap:10px;align-items:center}
h1 code{background:none;padding:0;font-size:1em}
h2{font-size:17px;margin:0 0 14px;font-weight:650}
h3{font-size:14px;margin:18px 0 8px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.brand{color:var(--accent);font-weight:700;font-size:13px;text-transform:uppercase;letter-spacing:.08em}
.meta{color:var(--muted)}
header{margin-bottom:22px}
section{background:var(--panel);border:1px solid var(--line);border-radius:12px;padding:20px 22px;margin:0 0 18px}
.status{font-size:12px;font-weight:700;padding:3px 10px;border-radius:999px;text-transform:uppercase;
letter-spacing:.05em;color:#fff}
.status-ok{background:var(--ok)}.status-bad{background:var(--bad)}.status-warn{background:var(--warn)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:12px;margin-top:18px}
.card{background:var(--panel);border:1px solid var(--line);border-radius:12px;padding:14px 16px}
.card-label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.05em}
.card-value{font-size:24px;font-weight:700;margin:2px 0;font-variant-numeric:tabular-nums;white-space:nowrap}
.card-note{color:var(--muted);font-size:13px}
.card-bad{border-top:4px solid var(--bad)}.card-warn{border-top:4px solid var(--warn)}
.card-ok{border-top:4px solid var(--ok)}
.meter{height:6px;background:var(--line);border-radius:3px;overflow:hidden;margin:6px 0 4px;min-width:80px}
.meter>div{height:100%;background:var(--accent)}
.meter-warn>div{background:var(--warn)}.meter-bad>div{background:var(--bad)}
pre.error{background:rgba(217,45,32,.08);border-left:3px solid var(--bad);padding:10px 12px;white-space:pre-wrap;
margin:12px 0 0;border-radius:6px}
.chart{width:100%;height:auto;display:block}
.chart .grid{stroke:var(--line);stroke-width:1}
.chart .axis,.chart .xtick{stroke:var(--muted);stroke-width:1}
.chart .tick{fill:var(--muted);font-size:12px}
.chart .axis-label{fill:var(--muted);font-size:12px}
.chart .area{fill:var(--accent-soft)}
.chart .line-peak,.spark .line-peak{fill:none;stroke:var(--accent);stroke-width:2;stroke-linejoin:round}
.chart .line-end{fill:none;stroke:var(--end);stroke-width:1.6;stroke-dasharray:5 3}
.chart .dot-peak{fill:var(--accent)}.chart .dot-end{fill:var(--end)}
.chart .budget{stroke:var(--bad);stroke-width:1.5;stroke-dasharray:7 5}
.chart .budget-label{fill:var(--bad);font-size:12px;font-weight:600}
.chart .run-peak{stroke:var(--fg);stroke-width:1;stroke-dasharray:2 4;opacity:.7}
.chart .run-peak-label{fill:var(--muted);font-size:12px}
.chart .peak-marker{fill:var(--panel);stroke:var(--bad);stroke-width:2.5}
.chart .peak-label{fill:var(--fg);font-size:13px;font-weight:650;paint-order:stroke;stroke:var(--panel);
stroke-width:4px}
.chart .hover{fill:transparent}.chart .hover:hover{fill:var(--accent-soft)}
.legend{display:flex;flex-wrap:wrap;gap:18px;color:var(--muted);font-size:13px;margin-top:8px}
.sw{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;vertical-align:-1px}
.sw-eval{background:var(--eval);border:1px solid var(--line)}
.chart .eval-band{fill:var(--eval)}
.sw-peak{background:var(--accent)}.sw-end{background:var(--end)}.sw-budget{background:var(--bad)}
svg.bar{width:100%;height:44px;display:block;margin-bottom:14px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em;font-weight:600}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:hover{color:var(--fg)}
table.sortable th[data-dir=asc]::after{content:" \\25B2"}table.sortable th[data-dir=desc]::after{content:" \\25BC"}
.num{text-align:right;white-space:nowrap}.nowrap{white-space:nowrap}
table.compact{width:auto;min-width:360px}
tfoot td{font-weight:650;border-bottom:none}
.cellbar{display:inline-block;width:90px;height:8px;background:var(--line);border-radius:4px;margin-right:10px;
overflow:hidden;vertical-align:0}
.cellbar>div{height:100%;background:#54a24b}
.finding{border:1px solid var(--line);border-left:4px solid var(--info);border-radius:8px;padding:12px 14px;
margin:0 0 12px}
.finding-error{border-left-color:var(--bad)}.finding-warning{border-left-color:var(--warn)}
.finding-head{display:flex;flex-wrap:wrap;gap:10px;align-items:center}
.badge{font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.05em;padding:2px 8px;
border-radius:999px;color:#fff;background:var(--info)}
.badge-error{background:var(--bad)}.badge-warning{background:var(--warn)}
.kind{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;color:var(--muted)}
.bytes{font-weight:700;margin-left:auto}
.message{margin:8px 0 6px}
.fix{background:rgba(18,161,80,.09);border-radius:6px;padding:7px 10px}
.fix b{color:var(--ok);margin-right:6px;text-transform:uppercase;font-size:12px;letter-spacing:.05em}
.facts{color:var(--muted);font-size:13px;margin-top:6px}
.clean{font-size:16px;color:var(--ok);font-weight:600;margin:0}
.muted{color:var(--muted)}
.oom{border-color:var(--bad);box-shadow:0 0 0 1px var(--bad) inset}
.oom h2{color:var(--bad)}
.facts-grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px;margin:12px 0}
.facts-grid dt{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.facts-grid dd{margin:0;font-weight:650;font-size:18px}
.held{display:flex;flex-wrap:wrap;gap:12px 40px;margin:4px 0 8px}
.cellbar.wide{width:160px}
footer{color:var(--muted);font-size:13px;text-align:center;margin-top:26px}
ul{margin:8px 0 0;padding-left:22px}
"""

_JS = """
document.querySelectorAll('table.sortable th').forEach(function(th){th.addEventListener('click',function(){
var t=th.closest('table'),b=t.tBodies[0],i=th.cellIndex,asc=th.dataset.dir!=='asc';
t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});th.dataset.dir=asc?'asc':'desc';
function k(r){var c=r.cells[i];if(!c)return'';var v=c.dataset.v;if(v!==undefined&&v!==''&&!isNaN(+v))return +v;
return c.textContent.trim().toLowerCase()}
Array.prototype.slice.call(b.rows).sort(function(x,y){var p=k(x),q=k(y);var s=(typeof p==='number'&&
typeof q==='number')?p-q:String(p).localeCompare(String(q));return asc?s:-s}).forEach(function(r){b.appendChild(r)});
});});
"""


def render_html(report: Report) -> str:
    """The whole report as one self-contained HTML page."""
    budget = budget_bytes(report)
    from_snapshot = isinstance(report.cuda, dict) and report.cuda.get("source") == "snapshot"
    empty_note = "A PyTorch memory snapshot holds no per-step figures." if from_snapshot else ""
    breakdown = ""
    if report.breakdown_at_peak.total > 0:
        breakdown = '<section id="breakdown"><h2>At the peak, by category</h2>' + breakdown_chart(report) + "</section>"
    sections = [
        _header(report),
        _oom(report),
        _findings(report),
        _recommendations(report),
        '<section id="timeline"><h2>Memory per step</h2>'
        + steps_chart(report.steps, budget, report.peak_bytes, empty_note=empty_note) + "</section>",
        breakdown,
        _modules(report),
        _ranks(report),
        _largest(report),
        _allocator(report),
        _warnings(report),
    ]
    title = f"memprof: {os.path.basename(report.script) or 'report'}"
    footer = (f"<footer>memprof {esc(report.memprof_version)} &middot; {esc(report.schema)} &middot; "
              "a self-contained file: nothing is loaded from the network</footer>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><main>"
        + "".join(s for s in sections if s)
        + footer
        + f"</main><script>{_JS}</script></body></html>\n"
    )


def write_html(report: Report, path: str | os.PathLike[str]) -> None:
    """Write the HTML report atomically (see :func:`memprof.report.json_io.write_atomic`)."""
    write_atomic(path, render_html(report))
