"""The terminal summary memprof prints at the end of a run (and ``memprof report`` prints).

Everything here reads a :class:`~memprof.model.Report` and nothing else. Findings are
listed like compiler diagnostics (``train.py:42: warning: ... [kind]``) so editors and terminals
can jump to them; errors and warnings first, info after. Lines stay within 100 columns where
the content allows; ANSI colour only when asked for.
"""

from __future__ import annotations

import textwrap

from memprof.model import CATEGORIES, Finding, OomReport, Recommendation, Report, Severity, Status, TensorRecord
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
from memprof.units import fmt_bytes

WIDTH = 100
_BAR_WIDTH = 20
_MAX_INFO = 6
_MAX_TENSORS = 8


class _Style:
    """ANSI escapes when enabled, identity otherwise."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and text else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def red(self, text: str) -> str:
        return self._wrap("1;31", text)

    def yellow(self, text: str) -> str:
        return self._wrap("1;33", text)

    def cyan(self, text: str) -> str:
        return self._wrap("36", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def severity(self, severity: Severity, text: str) -> str:
        if severity is Severity.ERROR:
            return self.red(text)
        if severity is Severity.WARNING:
            return self.yellow(text)
        return self.cyan(text)


class _Glyphs:
    def __init__(self, unicode: bool) -> None:
        self.full = "\u2588" if unicode else "#"
        self.empty = "\u2591" if unicode else "."
        self.arrow = "\u2192" if unicode else "->"
        self.sep = " \u00b7 " if unicode else " | "
        self.ellipsis = "\u2026" if unicode else "..."


# ----------------------------------------------------------------------------------------- helpers


def location(finding: Finding, cwd: str | None = None) -> str:
    """``file:line`` for a finding (``file`` alone without a line; empty without a file)."""
    if not finding.file:
        return ""
    path = display_path(finding.file, cwd)
    return f"{path}:{finding.line}" if finding.line else path


def _trim(text: str, width: int, ellipsis: str) -> str:
    return text if len(text) <= width else text[: max(0, width - len(ellipsis))] + ellipsis


def _wrap(text: str, indent: str, width: int = WIDTH) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False) or [indent.rstrip()]


# ----------------------------------------------------------------------------------------- sections


def _header(report: Report, st: _Style, g: _Glyphs, cwd: str | None) -> list[str]:
    cmd = _trim(" ".join([display_path(report.script, cwd) or "<unknown>", *report.argv]), 48, g.ellipsis)
    status = status_text(report)
    ok = report.status is Status.OK and report.exit_code in (None, 0)
    duration = fmt_seconds(report.duration_seconds) if report.duration_seconds else ""
    n_steps = report.step_count  # a long run's steps are downsampled: its count is every step's
    steps = f"{n_steps:,} step{'s' if n_steps != 1 else ''}" if n_steps else ""
    n_eval = report.eval_step_count
    split = f" ({n_steps - n_eval:,} train, {n_eval:,} eval)" if steps and n_eval else ""
    device, short_device = device_text(report), report.device.name or report.device.type

    def line(dev: str, split: str) -> tuple[str, str]:
        parts = [cmd, status, dev, duration, steps + split]
        plain = "memprof: " + g.sep.join(p for p in parts if p)
        parts[0], parts[1] = st.bold(cmd), (st.green(status) if ok else st.red(status))
        return plain, "memprof: " + g.sep.join(p for p in parts if p)

    plain, styled = line(device, split)
    if len(plain) > WIDTH:
        plain, styled = line(device, "")
    if len(plain) > WIDTH:
        plain, styled = line(short_device, "")
    lines = [styled]
    if report.error and report.status is not Status.OK and report.error.strip():
        lines.append(f"  {st.dim(_trim(report.error.strip().splitlines()[-1], WIDTH - 2, g.ellipsis))}")
    return lines


def _peak(report: Report, st: _Style, g: _Glyphs) -> list[str]:
    lines: list[str] = []
    total = report.device.total_bytes
    budget = report.budget_bytes
    shares = []
    if budget:
        shares.append(f"{fmt_pct(report.peak_bytes, budget)} of the {fmt_bytes(budget)} budget")
    if total and total != budget:
        shares.append(f"{fmt_pct(report.peak_bytes, total)} of the {fmt_bytes(total)} device")
    text = f"peak      {st.bold(fmt_bytes(report.peak_bytes))}"
    if report.steps:
        peak_step = max(report.steps, key=lambda s: s.peak_bytes)
        if peak_step.peak_bytes == report.peak_bytes:
            text += f" at step {peak_step.index}"
    if shares:
        text += f" ({'; '.join(shares)})"
    lines.append(text)
    reserved = reserved_bytes(report)
    if reserved:
        at_peak = " at its peak" if reserved[0] == "peak reserved" else ""
        lines.append(f"reserved  {fmt_bytes(reserved[1])}{at_peak} by the CUDA caching allocator")
    if len(report.steps) >= 2:
        first, last = report.steps[0], report.steps[-1]
        # A step's end is at most its peak (what is alive at its end was alive in it): a report
        # that says more (an older memprof's) measured it at another moment.
        start, stop = min(first.end_bytes, first.peak_bytes), min(last.end_bytes, last.peak_bytes)
        lines.append(
            f"step end  {fmt_bytes(start)} at step {first.index} {g.arrow} "
            f"{fmt_bytes(stop)} at step {last.index} ({fmt_bytes(stop - start, signed=True)})"
        )
    if report.ranks:
        ranks = sorted(report.ranks, key=lambda r: r.peak_bytes)
        lo, hi = ranks[0], ranks[-1]
        lines.append(
            f"ranks     {len(ranks)}: peak {fmt_bytes(hi.peak_bytes)} on rank {hi.rank}, "
            f"lowest {fmt_bytes(lo.peak_bytes)} on rank {lo.rank}"
        )
    return lines


def _breakdown(report: Report, st: _Style, g: _Glyphs) -> list[str]:
    bd = report.breakdown_at_peak
    total = bd.total
    if total <= 0:
        return []
    lines = [st.bold("at peak")]
    for cat in CATEGORIES:
        value = bd.get(cat)
        frac = value / total
        filled = int(round(frac * _BAR_WIDTH))
        if value > 0 and filled == 0:
            filled = 1
        bar = g.full * filled + g.empty * (_BAR_WIDTH - filled)
        label = cat.value.replace("_", " ")
        lines.append(f"  {label:<16} {fmt_bytes(value):>10} {fmt_pct(value, total):>5}  {st.cyan(bar)}")
    return lines


# What the module table shows: not the breakdown at the peak (its activations are what is alive
# then), but each module's largest step, with the weights and inputs its layers save for backward.
MODULES_SHOW = "activations saved for backward in one step, largest over the run"
MODULES_NOTE = "what its forward saved, the weights and inputs it saves included: not the peak's breakdown"


def _modules(report: Report, st: _Style, g: _Glyphs, max_modules: int) -> list[str]:
    if not report.modules or max_modules <= 0:
        return []
    mods = sorted(report.modules, key=lambda m: m.activation_bytes, reverse=True)[:max_modules]
    name_w = min(36, max(len("module"), *(len(m.name) for m in mods)))
    type_w = min(20, max(len("type"), *(len(m.type) for m in mods)))
    head = f"  {'module':<{name_w}}  {'type':<{type_w}}  {'params':>10}  {'activations':>11}  {'grads':>10}"
    title = f"top modules by {MODULES_SHOW} ({len(mods)} of {len(report.modules)})"
    lines = [st.bold(title), st.dim(f"  ({MODULES_NOTE})"), st.dim(head)]
    for m in mods:
        lines.append(
            f"  {_trim(m.name or '<root>', name_w, g.ellipsis):<{name_w}}  {_trim(m.type, type_w, g.ellipsis):<{type_w}}  "
            f"{fmt_bytes(m.parameter_bytes):>10}  {fmt_bytes(m.activation_bytes):>11}  {fmt_bytes(m.gradient_bytes):>10}"
        )
    return lines


def _finding_lines(f: Finding, st: _Style, g: _Glyphs, cwd: str | None) -> list[str]:
    loc = location(f, cwd)
    prefix = f"{loc}: " if loc else ""
    sev = st.severity(f.severity, f"{f.severity.value}:")
    first = f"{prefix}{sev} {f.message.strip()} [{f.kind.value}]"
    # Keep the first line whole up to the message's first words: editors parse 'file:line:'.
    plain_len = len(f"{prefix}{f.severity.value}: ")
    wrapped = textwrap.wrap(f.message.strip() + f" [{f.kind.value}]", width=max(40, WIDTH - plain_len),
                            break_long_words=False, break_on_hyphens=False)
    if len(wrapped) > 1:
        first = f"{prefix}{sev} {wrapped[0]}"
        lines = [first, *(f"    {w}" for w in _wrap(" ".join(wrapped[1:]), "", WIDTH - 4))]
    else:
        lines = [first]
    details = []
    if f.severity.is_diagnosis and f.bytes:
        details.append(f"{fmt_bytes(f.bytes)} at stake")
    if f.ranks:
        details.append(("rank " if len(f.ranks) == 1 else "ranks ") + ", ".join(str(r) for r in f.ranks))
    if f.advice:
        details.append(f"fix: {f.advice.strip()}")
    if details:
        lines.extend(_wrap(g.sep.join(details), "    "))
    return lines


def _findings(report: Report, st: _Style, g: _Glyphs, cwd: str | None) -> list[str]:
    diagnoses = sorted_findings(f for f in report.findings if f.severity.is_diagnosis)
    infos = sorted_findings(f for f in report.findings if not f.severity.is_diagnosis)
    lines: list[str] = []
    if diagnoses:
        n_err = sum(1 for f in diagnoses if f.severity is Severity.ERROR)
        n_warn = len(diagnoses) - n_err
        counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((n_err, "error"), (n_warn, "warning")) if n]
        lines.append(st.bold(f"findings ({', '.join(counts)})"))
        for f in diagnoses:
            lines.extend(_finding_lines(f, st, g, cwd))
    elif report.status is Status.OOM:
        lines.append(st.bold("findings: none besides the out-of-memory error below"))
    else:
        lines.append(st.green("No memory problems found: no errors or warnings."))
    if infos:
        lines.append(st.bold(f"tips ({len(infos)})"))
        for f in infos[:_MAX_INFO]:
            lines.extend(_finding_lines(f, st, g, cwd))
        if len(infos) > _MAX_INFO:
            lines.append(st.dim(f"  {g.ellipsis} and {len(infos) - _MAX_INFO} more (see the JSON or HTML report)"))
    return lines


def recommendation_figures(rec: Recommendation, budget: int | None, arrow: str = "->") -> str:
    """``64 -> 192; predicted peak 7.50 GiB (94% of budget)``: the numbers of a recommendation."""
    parts = []
    if rec.current is not None and rec.suggested is not None:
        parts.append(f"{fmt_value(rec.current)} {arrow} {fmt_value(rec.suggested)}")
    elif rec.suggested is not None:
        parts.append(f"suggested {fmt_value(rec.suggested)}")
    if rec.predicted_peak_bytes is not None:
        text = f"predicted peak {fmt_bytes(rec.predicted_peak_bytes)}"
        rec_budget = rec.budget_bytes or budget
        if rec_budget:
            text += f" ({fmt_pct(rec.predicted_peak_bytes, rec_budget)} of {fmt_bytes(rec_budget)})"
        parts.append(text)
    return "; ".join(parts)


def _recommendations(report: Report, st: _Style, g: _Glyphs) -> list[str]:
    if not report.recommendations:
        return []
    budget = report.budget_bytes
    lines = [st.bold("recommendations")]
    for rec in report.recommendations:
        head = f"  {rec.kind.value}: {rec.message.strip()}"
        figures = recommendation_figures(rec, budget, g.arrow)
        if figures and len(head) + len(g.sep) + len(figures) <= WIDTH:
            lines.append(f"{head}{g.sep}{figures}")
        else:
            lines.extend(textwrap.wrap(head.strip(), width=WIDTH, initial_indent="  ", subsequent_indent="    ",
                                       break_long_words=False, break_on_hyphens=False))
            if figures:
                lines.append(f"    {figures}")
    return lines


_MAX_HELD = 5


def _oom(report: Report, st: _Style, g: _Glyphs, cwd: str | None) -> list[str]:
    if not has_post_mortem(report):
        return []
    oom = report.oom or OomReport()
    title = "out of memory: post-mortem"
    if oom.source:
        title += f" ({oom_source(oom.source)})"
    lines = [st.red(title)]
    if oom.message:
        lines.extend(_wrap(str(oom.message), "  "))
    file, line = oom_location(report)
    if file:
        lines.append(f"  at {display_path(file, cwd)}" + (f":{line}" if line else ""))
    figures = [f"{label} {shown}" for label, shown in oom_figures(oom)]
    if figures:
        lines.extend(_wrap(", ".join(figures), "  "))
    for key, value in oom.items():
        items = byte_items(value) if key != "largest_allocations" else []
        if not items:
            continue
        label = {"breakdown": "held by", "by_module": "by module"}.get(key, key.replace("_", " "))
        shown = ", ".join(f"{name.replace('_', ' ') if key == 'breakdown' else name} {fmt_bytes(b)}"
                          for name, b in items[:_MAX_HELD])
        more = f", {g.ellipsis}" if len(items) > _MAX_HELD else ""
        lines.extend(_wrap(f"{label}: {shown}{more}", "  "))
    tensors = list(report.largest_tensors)
    title_tensors = "largest live tensors"
    if not tensors and oom.largest_allocations:
        tensors = list(oom.largest_allocations)
        title_tensors = "largest allocations"
    if tensors:
        lines.append(f"  {title_tensors} ({min(len(tensors), _MAX_TENSORS)} of {len(tensors)}):")
        lines.extend(_tensor_line(t, g, cwd) for t in tensors[:_MAX_TENSORS])
    return lines


def _tensor_line(t: TensorRecord, g: _Glyphs, cwd: str | None) -> str:
    desc = [f"{fmt_bytes(t.bytes):>10}"]
    for value in (t.dtype, t.category):
        if value:
            desc.append(str(value).replace("torch.", ""))
    if t.shape is not None:
        desc.append(fmt_shape(t.shape))
    if t.module:
        desc.append(f"in {t.module}")
    if t.file:
        desc.append("at " + display_path(str(t.file), cwd) + (f":{t.line}" if t.line else ""))
    return _trim("    " + "  ".join(desc), WIDTH, g.ellipsis)


def _warnings(report: Report, st: _Style) -> list[str]:
    if not report.warnings:
        return []
    lines = [st.dim("memprof's own warnings (about the measurement, not your script):")]
    for w in report.warnings:
        lines.extend(st.dim(ln) for ln in _wrap(f"- {w}", "  "))
    return lines


# ----------------------------------------------------------------------------------------- entry


def render_summary(report: Report, color: bool = False, max_modules: int = 8, unicode: bool = True,
                   cwd: str | None = None) -> str:
    """The terminal summary of ``report``: headline, breakdown, modules, findings, advice, post-mortem.

    ``color`` adds ANSI escapes; ``unicode=False`` keeps to ASCII (bars, arrows) for streams that
    cannot encode more; ``cwd`` is the folder paths are shown relative to (default: the current one).
    """
    st = _Style(color)
    g = _Glyphs(unicode)
    sections: list[list[str]] = [
        _header(report, st, g, cwd) + _peak(report, st, g),
        _breakdown(report, st, g),
        _modules(report, st, g, max_modules),
        _findings(report, st, g, cwd),
        _recommendations(report, st, g),
        _oom(report, st, g, cwd),
        _warnings(report, st),
    ]
    return "\n".join("\n".join(s) for s in sections if s) + "\n"
