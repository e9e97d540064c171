"""The SVG chart engine of the HTML report: the memory per step, the breakdown bar, sparklines.

Charts are inline SVG (nothing is fetched). Long runs are downsampled for drawing (at most
``MAX_POINTS`` points per line), so a 10,000-step report renders in milliseconds and stays small.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from memprof.model import CATEGORIES, Category, Report, StepRecord
from memprof.report.format import fmt_pct
from memprof.units import fmt_bytes

MAX_POINTS = 600

CATEGORY_COLORS: dict[Category, str] = {
    Category.PARAMETERS: "#4c78a8",
    Category.GRADIENTS: "#f58518",
    Category.OPTIMIZER_STATE: "#b279a2",
    Category.ACTIVATIONS: "#54a24b",
    Category.OTHER: "#9d9d9d",
}


def esc(value: Any) -> str:
    """``value`` as HTML text or attribute, escaped: every string from a report goes through here."""
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


def bucket_steps(steps: Sequence[StepRecord], max_points: int = MAX_POINTS) -> int:
    """How many consecutive step indices one drawn point covers."""
    if not steps:
        return 1
    return max(1, math.ceil((steps[-1].index - steps[0].index + 1) / max_points))


def downsample(steps: Sequence[StepRecord], max_points: int = MAX_POINTS) -> list[tuple[int, int, int, int, int]]:
    """Buckets of consecutive step indices: (first index, last index, max peak, max end, min end).

    By index, not by position: a long run's report keeps its first and last steps and, between
    them, each bucket's extremes (:mod:`memprof.model.history`), so the steps kept are denser at
    the ends; buckets of equal index spans draw them at an even pace."""
    if not steps:
        return []
    lo, size = steps[0].index, bucket_steps(steps, max_points)
    out: list[tuple[int, int, int, int, int]] = []
    key, first, last, peak, hi_end, lo_end = -1, 0, 0, 0, 0, 0
    for s in steps:
        k = (s.index - lo) // size
        end = min(s.end_bytes, s.peak_bytes)
        if k != key:
            if key >= 0:
                out.append((first, last, peak, hi_end, lo_end))
            key, first, peak, hi_end, lo_end = k, s.index, s.peak_bytes, end, end
        else:
            peak, hi_end, lo_end = max(peak, s.peak_bytes), max(hi_end, end), min(lo_end, end)
        last = s.index
    out.append((first, last, peak, hi_end, lo_end))
    return out


def steps_chart(steps: Sequence[StepRecord], budget: int | None = None, run_peak: int | None = None,
                width: int = 1000, height: int = 320, empty_note: str = "", total: int | None = None) -> str:
    """SVG line chart of peak and end-of-step bytes per step, the peak marked, the budget dashed.

    ``total``: how many steps the run had, where ``steps`` holds those a long run kept.

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
    bucket_size = bucket_steps(steps)
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
        count = max(total or 0, len(steps))
        kept = f" ({len(steps):,} kept)" if count > len(steps) else ""
        legend.append(f'<span class="muted">{count:,} steps{kept} drawn as {len(buckets)} points '
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

