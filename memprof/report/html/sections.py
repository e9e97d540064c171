"""The sections of the HTML report, in the order the page shows them: each takes the Report and
returns its HTML (empty when the report has nothing for it). Every string from the report is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memprof.model import CATEGORIES, Finding, OomReport, Report, Severity, Status, TensorRecord
from memprof.report.format import (
    byte_items,
    device_text,
    display_path,
    fmt_pct,
    fmt_seconds,
    fmt_shape,
    fmt_value,
    has_post_mortem,
    oom_figures,
    oom_location,
    oom_source,
    reserved_bytes,
    sorted_findings,
    status_text,
)
from memprof.report.html.charts import CATEGORY_COLORS, breakdown_chart, esc, sparkline, steps_chart
from memprof.units import fmt_bytes

MAX_MODULES = 1000
MAX_TENSORS = 50
MAX_HELD_ROWS = 12


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


def header(report: Report) -> str:
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
    budget = report.budget_bytes
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


def findings(report: Report) -> str:
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


def recommendations(report: Report) -> str:
    if not report.recommendations:
        return ""
    budget = report.budget_bytes
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


def _tensors_table(tensors: Sequence[TensorRecord]) -> str:
    """Tensors (or allocator blocks) as a sortable table; columns no row fills are left out."""
    rows_in = list(tensors)[:MAX_TENSORS]
    cols = [c for c in ("shape", "dtype", "category", "module")
            if any(getattr(t, c) not in (None, "", []) for t in rows_in)]
    rows = []
    for t in rows_in:
        cells = [f'<td class="num" data-v="{esc(t.bytes)}">{esc(fmt_bytes(t.bytes))}</td>']
        for c in cols:
            value = getattr(t, c)
            if c == "shape":
                cells.append(f"<td><code>{esc(fmt_shape(value))}</code></td>" if value not in (None, "") else "<td></td>")
            elif c == "module":
                cells.append(f"<td><code>{esc(value)}</code></td>" if value else "<td></td>")
            else:
                cells.append(f"<td>{esc(value or '')}</td>")
        cells.append(f"<td>{_where(t.file, t.line)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = '<th class="num">bytes</th>' + "".join(f"<th>{esc(c)}</th>" for c in cols) + "<th>allocated at</th>"
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _tensor_records(value: Any) -> list[TensorRecord]:
    """A section's list of tensors: its own records, or the plain dicts of a key a newer memprof wrote."""
    if not isinstance(value, list) or not value:
        return []
    if all(isinstance(v, TensorRecord) for v in value):
        return list(value)
    if all(isinstance(v, dict) for v in value):
        return [TensorRecord.from_dict(v) for v in value]
    return []


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


def oom(report: Report) -> str:
    if not has_post_mortem(report):
        return ""
    post = report.oom or OomReport()
    facts = [f"<div><dt>{esc(label)}</dt><dd>{esc(shown)}</dd></div>" for label, shown in oom_figures(post)]
    out = ['<section id="oom" class="oom"><h2>Out of memory: post-mortem</h2>']
    if post.source:
        out.append(f'<p class="muted">source: {esc(oom_source(post.source))}</p>')
    if post.message:
        out.append(f"<p>{esc(post.message)}</p>")
    file, line = oom_location(report)
    where = _where(file, line)
    if where:
        out.append(f"<p>failed at {where}</p>")
    if facts:
        out.append(f'<dl class="facts-grid">{"".join(facts)}</dl>')
    held = []
    for key, value in post.items():
        if key == "largest_allocations":
            continue
        items = byte_items(value)
        if items and isinstance(value, dict):
            what = {"breakdown": "held by category", "by_module": "held by module"}.get(key, key.replace("_", " "))
            held.append(f"<div>{_held_table(items, what, colors=key == 'breakdown')}</div>")
    if held:
        out.append(f'<div class="held">{"".join(held)}</div>')
    for key, value in post.items():
        tensors = _tensor_records(value)
        if tensors:
            out.append(f"<h3>{esc(key.replace('_', ' '))} when it failed</h3>{_tensors_table(tensors)}")
    if report.largest_tensors:
        out.append(f"<h3>Largest live tensors</h3>{_tensors_table(report.largest_tensors)}")
    out.append("</section>")
    return "".join(out)


def largest_tensors(report: Report) -> str:
    if has_post_mortem(report) or not report.largest_tensors:
        return ""
    return f'<section id="tensors"><h2>Largest tensors</h2>{_tensors_table(report.largest_tensors)}</section>'


def modules(report: Report) -> str:
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
    return ('<section id="modules"><h2>Modules by activations saved for backward in one step</h2>'
            '<p class="muted">Each module\'s largest step over the run: what its forward saved for backward, the '
            'weights and inputs its layers save included. Not the breakdown at the peak, whose activations are '
            'what was alive at that moment. Click a column to sort.</p>'
            '<table class="sortable"><thead><tr><th>module</th><th>type</th><th class="num">parameters</th>'
            '<th class="num">activations</th><th class="num">gradients</th><th class="num">calls</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>{more}</section>')


def ranks(report: Report) -> str:
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


def allocator(report: Report) -> str:
    """The CUDA allocator's figures (``report.cuda``), in field order, then the keys an importer wrote."""
    if report.cuda is None:
        return ""
    facts = []
    for key, value in report.cuda.items():
        if key in _CUDA_SKIP or isinstance(value, (dict, list)) or value is None:
            continue
        label = key.replace("_bytes", "").replace("_", " ")
        shown = fmt_bytes(value) if key.endswith("_bytes") and isinstance(value, (int, float)) else fmt_value(value)
        facts.append(f"<div><dt>{esc(label)}</dt><dd>{esc(shown)}</dd></div>")
    settings = report.cuda.allocator_settings
    extra = ""
    if isinstance(settings, dict) and settings:
        pairs = ", ".join(f"{k}={fmt_value(v)}" for k, v in settings.items())
        extra = f'<p class="muted">allocator settings: <code>{esc(pairs)}</code></p>'
    if not facts and not extra:
        return ""
    return (f'<section id="allocator"><h2>CUDA caching allocator</h2><dl class="facts-grid">{"".join(facts)}</dl>'
            f"{extra}</section>")


def warnings(report: Report) -> str:
    if not report.warnings:
        return ""
    items = "".join(f"<li>{esc(w)}</li>" for w in report.warnings)
    return ('<section id="warnings"><h2>memprof\'s own warnings</h2><p class="muted">About the measurement, '
            f"not about your script.</p><ul>{items}</ul></section>")


def timeline(report: Report) -> str:
    from_snapshot = report.cuda is not None and report.cuda.source == "snapshot"
    empty_note = "A PyTorch memory snapshot holds no per-step figures." if from_snapshot else ""
    return ('<section id="timeline"><h2>Memory per step</h2>'
            + steps_chart(report.steps, report.budget_bytes, report.peak_bytes, empty_note=empty_note,
                          total=report.step_count) + "</section>")


def breakdown(report: Report) -> str:
    if report.breakdown_at_peak.total <= 0:
        return ""
    return '<section id="breakdown"><h2>At the peak, by category</h2>' + breakdown_chart(report) + "</section>"
