"""The run screen's panels as text: what each one shows for a state (no Textual here).

:class:`~memprof.tui.run_screen.RunScreen` owns the widgets and when to redraw; these functions own
what is drawn, so the monitor's run table can reuse a finding's two lines as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.text import Text

from memprof.live.state import LiveState
from memprof.tui.feed import FINAL_STATUSES
from memprof.tui.format import (
    SEVERITY_ICON,
    STATUS_LABEL,
    bar,
    budget_of,
    command_line,
    duration,
    finding_fix,
    pct,
    recommendation_line,
    where,
)
from memprof.units import fmt_bytes


def module_total(m: dict[str, Any]) -> int:
    return sum(int(m.get(k) or 0) for k in ("parameter_bytes", "activation_bytes", "gradient_bytes"))


# The module table's columns, all sortable: (key, header, width, value of a module dict)
MODULE_COLUMNS: tuple[tuple[str, str, int, Callable[[dict[str, Any]], Any]], ...] = (
    ("name", "Module", 19, lambda m: str(m.get("name", ""))),
    ("type", "Type", 14, lambda m: str(m.get("type", ""))),
    ("parameter_bytes", "Params", 9, lambda m: int(m.get("parameter_bytes") or 0)),
    ("activation_bytes", "Activations", 11, lambda m: int(m.get("activation_bytes") or 0)),
    ("gradient_bytes", "Grads", 9, lambda m: int(m.get("gradient_bytes") or 0)),
    ("total", "Total", 9, module_total),
)
TEXT_COLUMNS = {"name", "type"}
SORT_CYCLE = ("total", "activation_bytes", "parameter_bytes", "gradient_bytes", "name", "type")


def sort_modules(modules: Sequence[dict[str, Any]], sort_by: str, reverse: bool) -> list[dict[str, Any]]:
    getter = next(g for k, _, _, g in MODULE_COLUMNS if k == sort_by)
    return sorted(modules, key=getter, reverse=reverse)


def module_cells(m: dict[str, Any]) -> list[str | Text]:
    """One row of the module table: names as text, sizes right-aligned."""
    cells: list[str | Text] = []
    for k, _, _, getter in MODULE_COLUMNS:
        value = getter(m)
        cells.append(str(value) if k in TEXT_COLUMNS else Text(fmt_bytes(value), justify="right"))
    return cells


def column_label(key: str) -> str:
    return next(lbl for k, lbl, _, _ in MODULE_COLUMNS if k == key)


def finding_key(f: dict[str, Any]) -> tuple[Any, ...]:
    return (f.get("kind"), f.get("file"), f.get("line"), f.get("variable"))


def finding_option(f: dict[str, Any]) -> Text:
    """Two lines: what and where (file:line, variable, bytes), then the fix."""
    sev = str(f.get("severity", "info"))
    style = {"error": "bold red", "warning": "bold yellow"}.get(sev, "bold cyan")
    out = Text()
    out.append(f"{SEVERITY_ICON.get(sev, '?')} {f.get('kind', '?')}", style=style)
    out.append(f"  {where(f)}", style="bold")
    if f.get("variable"):
        out.append("  ")
        out.append(str(f["variable"]), style="bold magenta")
    out.append("\n ")
    if f.get("bytes"):
        out.append(f" {fmt_bytes(int(f['bytes']))} ·", style="bold")
    fix = finding_fix(f)
    if fix:
        out.append(" fix: ", style="green")
        out.append(fix)
    return out


def new_finding_notice(f: dict[str, Any]) -> str:
    """The notification for a finding that just appeared: what, where, how big, then the fix."""
    var = f" `{f['variable']}`" if f.get("variable") else ""
    size = f": {fmt_bytes(int(f['bytes']))}" if f.get("bytes") else ""
    return f"{f.get('kind')}{var} at {where(f)}{size}\n{finding_fix(f)}"


def ended_text(status: str, exit_code: int | None, report_path: str | None) -> str:
    label = STATUS_LABEL.get(status, status.upper())
    code = f", exit code {exit_code}" if exit_code is not None else ""
    report = f" · report: {report_path}" if report_path else ""
    return f"Run {label.lower()}{code}{report}"


def top_bar(st: LiveState | None, elapsed: float) -> Text:
    top = Text()
    top.append(" memprof ", style="bold reverse")
    top.append("  ")
    if st is None:
        top.append("waiting for the run…", style="dim")
    else:
        top.append(command_line(st), style="bold")
        top.append(f"   pid {st.pid}   ", style="dim")
        status = st.status
        style = {"running": "bold green", "ok": "bold cyan", "interrupted": "bold yellow"}.get(status, "bold red")
        top.append(f"● {STATUS_LABEL.get(status, status.upper())}", style=style)
        top.append(f"   elapsed {duration(elapsed)}", style="dim")
    return top


def banner(link: str, message: str, st: LiveState | None, exit_code: int | None) -> tuple[Text | str, str]:
    """The line under the top bar for the link's state, and its CSS class ("" when live)."""
    if link == "ended":
        status = st.status if st else "?"
        why = "" if status in FINAL_STATUSES else f" · {message}"
        text = ended_text(status, exit_code, st.report_path if st else None)
        return Text(f" {text}{why} · q closes the UI"), "-ended" if status == "ok" else "-failed"
    if link == "dropped":
        return Text(
            f" ⚠ Live channel lost: {message}. The run itself is not affected and still writes its "
            "report; reconnecting…"
        ), "-dropped"
    if link == "waiting":
        return Text(f" … {message}"), "-waiting"
    return "", ""


def run_box(st: LiveState | None) -> Text:
    run = Text()
    if st is None:
        run.append("no state yet", style="dim")
        return run
    run.append("Batch size ", style="dim")
    run.append("—" if st.batch_size is None else str(st.batch_size), style="bold")
    run.append("\nPhase      ", style="dim")
    run.append(st.phase)
    dev = st.device or {}
    run.append("\nDevice     ", style="dim")
    run.append(str(dev.get("name") or dev.get("type") or "?")[:28])
    return run


def memory_box(st: LiveState | None) -> Text:
    """Current and peak against the budget (or the device, or the peak), then what the peak holds."""
    mem = Text()
    if st is None:
        mem.append("no state yet", style="dim")
        return mem
    limit, what = budget_of(st)
    width = 30
    for label, value in (("Current", st.current_bytes), ("Peak   ", st.peak_bytes)):
        frac = value / limit if limit else (value / st.peak_bytes if st.peak_bytes else 0.0)
        style = "red" if limit and frac > 0.9 else "yellow" if limit and frac > 0.75 else "green"
        mem.append(f"{label} ", style="dim")
        mem.append(f"{fmt_bytes(value):>10} ", style="bold")
        mem.append(bar(frac, width), style=style)
        if limit:
            mem.append(f" {pct(value, limit):>4} of {what}")
        if label.strip() == "Peak" and st.peak_step is not None:
            mem.append(f" · step {st.peak_step}", style="dim")
        mem.append("\n")
    if limit:
        mem.append(f"{'Budget' if what == 'budget' else 'Device'}  {fmt_bytes(limit):>10}", style="dim")
        headroom = limit - st.peak_bytes
        mem.append(f"  headroom {fmt_bytes(headroom)} above the peak", style="dim" if headroom > 0 else "red")
    else:
        mem.append("No budget (CPU run): bars are relative to the peak; set --budget", style="dim")
    if st.breakdown:
        mem.append("\nAt peak ", style="dim")
        parts = sorted(st.breakdown.items(), key=lambda kv: -kv[1])[:3]
        for i, (name, value) in enumerate(parts):
            mem.append(" · " if i else " ", style="dim")
            mem.append(f"{name.replace('_', ' ')} ", style="dim")
            mem.append(fmt_bytes(value), style="bold magenta" if i == 0 else "")
    return mem


def recommendations_text(recs: Sequence[dict[str, Any]]) -> Text:
    out = Text()
    for r in recs:
        out.append("• ", style="bold green")
        out.append(recommendation_line(r) + "\n")
    if not recs:
        out.append("none yet", style="dim")
    out.rstrip()
    return out


def finding_detail(findings: Sequence[dict[str, Any]], row: int) -> Text:
    """The highlighted finding (row ``row``, clamped) in full: where, when, and the whole message."""
    if not findings:
        return Text("No findings so far: they appear here as soon as they are found.", style="dim")
    f = findings[min(max(row, 0), len(findings) - 1)]
    out = Text()
    out.append(f"{f.get('file') or '<run>'}" + (f":{f.get('line')}" if f.get("line") else ""), style="underline")
    if f.get("step") is not None:
        out.append(f"  (found at step {f['step']})", style="dim")
    out.append("\n")
    out.append(str(f.get("message") or ""))
    return out
