"""The live view of one run: step, memory against the budget, the timeline, modules, findings.

Fed by a :class:`~memprof.tui.feed.RunFeed` passed in (the live channel, or a fake in tests) and
polled a few times a second; it never waits on the run, and the run never waits on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Digits, Footer, Log, OptionList, Static
from textual.widgets.data_table import RowKey

from memprof.hw.gpu import GpuBackend, GpuStatus
from memprof.live.state import LiveState
from memprof.tui.feed import FINAL_STATUSES, FeedEvent, LogSource, RunFeed
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
from memprof.tui.widgets import MemoryChart, gpu_panel
from memprof.units import fmt_bytes

CLOSING_HINT = (
    "q closes this UI only: the run goes on (output continues in this terminal) and still writes its report"
    " · ctrl+c interrupts the run"
)
VIEWER_HINT = "q/escape: back to the monitor (the run is not affected)"

def _module_total(m: dict[str, Any]) -> int:
    return sum(int(m.get(k) or 0) for k in ("parameter_bytes", "activation_bytes", "gradient_bytes"))


# The module table's columns, all sortable: (key, header, width, value of a module dict)
MODULE_COLUMNS: tuple[tuple[str, str, int, Callable[[dict[str, Any]], Any]], ...] = (
    ("name", "Module", 19, lambda m: str(m.get("name", ""))),
    ("type", "Type", 14, lambda m: str(m.get("type", ""))),
    ("parameter_bytes", "Params", 9, lambda m: int(m.get("parameter_bytes") or 0)),
    ("activation_bytes", "Activations", 11, lambda m: int(m.get("activation_bytes") or 0)),
    ("gradient_bytes", "Grads", 9, lambda m: int(m.get("gradient_bytes") or 0)),
    ("total", "Total", 9, _module_total),
)
_TEXT_COLUMNS = {"name", "type"}
SORT_CYCLE = ("total", "activation_bytes", "parameter_bytes", "gradient_bytes", "name", "type")


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


class RunScreen(Screen[None]):
    """The live view of one run."""

    CSS_PATH = "run.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "close_ui", "Close UI (run goes on)"),
        Binding("ctrl+c", "interrupt_run", "Interrupt run", priority=True),
        Binding("s", "sort_next", "Sort modules"),
        Binding("r", "sort_reverse", "Reverse sort"),
        Binding("m", "focus_panel('modules')", "Modules"),
        Binding("f", "focus_panel('findings')", "Findings"),
        Binding("l", "toggle_log", "Log size"),
        Binding("escape", "back", "Back", show=False),
    ]

    def __init__(
        self,
        feed: RunFeed,
        *,
        gpu: GpuBackend | None = None,
        log: LogSource | None = None,
        interrupt: Callable[[], str] | None = None,
        hint: str = CLOSING_HINT,
        embedded: bool = False,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.1,
        gpu_interval: float = 2.0,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.gpu = gpu
        self.log_source = log
        self.interrupt = interrupt
        self.hint = hint
        self.embedded = embedded  # pushed over another screen (the monitor): q goes back
        self.clock = clock
        self.poll_interval = poll_interval
        self.gpu_interval = gpu_interval
        self.state: LiveState | None = None
        self.link = "waiting"  # waiting | live | dropped | ended
        self.link_message = "waiting for the run to publish its state…"
        self.exit_code: int | None = None
        self.gpu_status: GpuStatus | None = None
        self.sort_by = "total"
        self.sort_reverse = True
        self.seen_findings: set[tuple[Any, ...]] = set()
        self.announced: list[str] = []  # the new-finding notices shown, in order
        self._modules_key: tuple[Any, ...] = ()
        self._findings_key: tuple[Any, ...] = ()
        self.ended_at: float | None = None
        self._ready = False  # widgets composed and set up

    # -- layout ---------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="topbar")
        yield Static(id="banner")
        with Horizontal(id="stats"):
            with Vertical(id="step-box", classes="panel"):
                yield Digits("0", id="step")
            yield Static(id="run-box", classes="panel")
            yield Static(id="memory-box", classes="panel")
        with Horizontal(id="middle"):
            yield MemoryChart(id="chart", classes="panel")
            yield Static(id="devices", classes="panel")
        with Horizontal(id="lower"):
            yield DataTable(id="modules", classes="panel", cursor_type="row", zebra_stripes=True)
            with Vertical(id="findings-pane"):
                yield OptionList(id="findings", classes="panel")
                yield Static(id="finding-detail", classes="panel")
                yield Static(id="recommendations", classes="panel")
        yield Log(id="log", classes="panel", max_lines=5000)
        yield Static(self.hint, id="hint")
        yield Footer()

    def on_mount(self) -> None:
        titles = {
            "step-box": "Step", "run-box": "Run", "memory-box": "Memory", "chart": "Memory over time",
            "devices": "Devices", "modules": "Modules", "findings": "Findings",
            "finding-detail": "Finding", "recommendations": "Recommendations", "log": "Script output",
        }
        for wid, title in titles.items():
            self.query_one(f"#{wid}").border_title = title
        modules = self.query_one("#modules", DataTable)
        for key, label, width, _ in MODULE_COLUMNS:
            modules.add_column(label, key=key, width=width)
        if self.log_source is None:
            self.query_one("#log").display = False
        self._ready = True
        self._render_all()
        self.feed.start()
        self.set_interval(self.poll_interval, self.poll_now)
        if self.gpu is not None:
            self.refresh_gpu()
            self.set_interval(self.gpu_interval, self.refresh_gpu)
        else:
            self.gpu_status = GpuStatus(backend="none", available=False, reason="GPU panel off")
        self.query_one("#modules").focus()

    # -- feeding --------------------------------------------------------------------------------
    def poll_now(self) -> None:
        """Apply what the feed and the log have for us (called a few times a second)."""
        events = self.feed.poll()
        newest: LiveState | None = None
        for event in events:
            if event.kind == "state" and event.state is not None:
                newest = event.state
                if self.link != "live":
                    self._set_link("live", "")
            else:
                if newest is not None:  # keep the order: a state before an "ended" counts first
                    self.apply_state(newest)
                    newest = None
                self.apply_event(event)
        if newest is not None:
            self.apply_state(newest)
        if self.log_source is not None:
            lines = self.log_source.poll()
            if lines:
                self.query_one("#log", Log).write_lines(lines)

    def apply_event(self, event: FeedEvent) -> None:
        if event.kind == "waiting":
            self._set_link("waiting", event.message or "waiting for the run…")
        elif event.kind == "connected":
            self._set_link("live", "")
        elif event.kind == "dropped":
            self._set_link("dropped", event.message or "the live channel closed")
            self.notify(f"Live channel lost: {event.message}", title="memprof", severity="error")
        elif event.kind == "ended":
            if event.state is not None:
                self.apply_state(event.state)
            self.exit_code = event.exit_code
            self.ended_at = self.clock()
            status = self.state.status if self.state else "?"
            message = event.message or "the run ended"
            self._set_link("ended", message)
            self.notify(self._ended_text(status), title="Run over", severity="information" if status == "ok" else
                        "warning", timeout=8)
        self._render_all()

    def apply_state(self, state: LiveState) -> None:
        self.state = state
        self._announce_new_findings(state)
        if state.status in FINAL_STATUSES and self.ended_at is None:
            self.ended_at = self.clock()
        self._render_all()

    def _set_link(self, link: str, message: str) -> None:
        self.link, self.link_message = link, message
        self._render_top()

    def _announce_new_findings(self, state: LiveState) -> None:
        new = [f for f in state.findings if finding_key(f) not in self.seen_findings]
        for f in new:
            self.seen_findings.add(finding_key(f))
        for f in new[:3]:
            var = f" `{f['variable']}`" if f.get("variable") else ""
            size = f": {fmt_bytes(int(f['bytes']))}" if f.get("bytes") else ""
            text = f"{f.get('kind')}{var} at {where(f)}{size}\n{finding_fix(f)}"
            self.announced.append(text)
            self.notify(text, title="New finding", severity="error" if f.get("severity") == "error" else "warning",
                        timeout=6)
        if len(new) > 3:
            self.notify(f"and {len(new) - 3} more findings", title="New findings", severity="warning")

    @work(thread=True, exclusive=True, group="gpu")
    def refresh_gpu(self) -> None:
        """Look at the GPUs off the UI thread (nvidia-smi may take a moment)."""
        if self.gpu is None:
            return
        status = self.gpu.snapshot()
        self.app.call_from_thread(self._show_gpu, status)

    def _show_gpu(self, status: GpuStatus) -> None:
        self.gpu_status = status
        self._render_devices()

    # -- drawing --------------------------------------------------------------------------------
    def _render_all(self) -> None:
        if not self._ready:
            return
        self._render_top()
        self._render_stats()
        budget, _ = budget_of(self.state) if self.state else (None, "")
        self.query_one(MemoryChart).show_state(self.state, budget)
        self._render_devices()
        self._render_modules()
        self._render_findings()

    def _elapsed(self) -> float:
        st = self.state
        if st is None or not st.started_at:
            return 0.0
        end = self.ended_at if self.ended_at is not None else self.clock()
        return max(end - st.started_at, 0.0)

    def _ended_text(self, status: str) -> str:
        label = STATUS_LABEL.get(status, status.upper())
        code = f", exit code {self.exit_code}" if self.exit_code is not None else ""
        report = f" · report: {self.state.report_path}" if self.state and self.state.report_path else ""
        return f"Run {label.lower()}{code}{report}"

    def _render_top(self) -> None:
        if not self._ready:
            return
        st = self.state
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
            top.append(f"   elapsed {duration(self._elapsed())}", style="dim")
        self.query_one("#topbar", Static).update(top)

        banner = self.query_one("#banner", Static)
        banner.set_classes("")
        if self.link == "ended":
            status = st.status if st else "?"
            why = "" if status in FINAL_STATUSES else f" · {self.link_message}"
            banner.update(Text(f" {self._ended_text(status)}{why} · q closes the UI"))
            banner.set_classes("-ended" if status == "ok" else "-failed")
        elif self.link == "dropped":
            banner.update(Text(
                f" ⚠ Live channel lost: {self.link_message}. The run itself is not affected and still writes its "
                "report; reconnecting…"
            ))
            banner.set_classes("-dropped")
        elif self.link == "waiting":
            banner.update(Text(f" … {self.link_message}"))
            banner.set_classes("-waiting")
        else:
            banner.update("")
        banner.display = self.link != "live"

    def _render_stats(self) -> None:
        st = self.state
        self.query_one("#step", Digits).update(f"{st.step:,}" if st else "0")
        run = Text()
        if st is None:
            run.append("no state yet", style="dim")
        else:
            run.append("Batch size ", style="dim")
            run.append("—" if st.batch_size is None else str(st.batch_size), style="bold")
            run.append("\nPhase      ", style="dim")
            run.append(st.phase)
            dev = st.device or {}
            run.append("\nDevice     ", style="dim")
            run.append(str(dev.get("name") or dev.get("type") or "?")[:28])
        self.query_one("#run-box", Static).update(run)

        mem = Text()
        if st is None:
            mem.append("no state yet", style="dim")
        else:
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
        self.query_one("#memory-box", Static).update(mem)

    def _render_devices(self) -> None:
        if not self._ready:
            return
        own = {self.state.pid} if self.state else set()
        self.query_one("#devices", Static).update(gpu_panel(self.gpu_status, own))

    def sorted_modules(self) -> list[dict[str, Any]]:
        mods = list(self.state.modules) if self.state else []
        getter = next(g for k, _, _, g in MODULE_COLUMNS if k == self.sort_by)
        return sorted(mods, key=getter, reverse=self.sort_reverse)

    def _render_modules(self) -> None:
        mods = self.sorted_modules()
        key = (self.sort_by, self.sort_reverse, tuple(tuple(sorted(m.items())) for m in mods))
        if key == self._modules_key:
            return
        self._modules_key = key
        table = self.query_one("#modules", DataTable)
        keep = self._cursor_key(table)
        table.clear()
        for m in mods:
            cells: list[str | Text] = []
            for k, _, _, getter in MODULE_COLUMNS:
                value = getter(m)
                cells.append(str(value) if k in _TEXT_COLUMNS else Text(fmt_bytes(value), justify="right"))
            table.add_row(*cells, key=str(m.get("name")))
        arrow = "▼" if self.sort_reverse else "▲"
        label = next(lbl for k, lbl, _, _ in MODULE_COLUMNS if k == self.sort_by)
        table.border_title = f"Modules ({len(mods)})"
        table.border_subtitle = f"sorted by {label} {arrow} · s: next column · r: reverse"
        self._restore_cursor(table, keep)

    def _render_findings(self) -> None:
        st = self.state
        findings = list(st.findings) if st else []
        recs = list(st.recommendations) if st else []
        key = (tuple(tuple(sorted((k, str(v)) for k, v in f.items())) for f in findings),
               tuple(recommendation_line(r) for r in recs))
        if key != self._findings_key:
            self._findings_key = key
            listing = self.query_one("#findings", OptionList)
            keep = listing.highlighted
            listing.clear_options()
            listing.add_options(finding_option(f) for f in findings)
            if findings:
                listing.highlighted = min(keep if keep is not None else 0, len(findings) - 1)
            serious = sum(1 for f in findings if f.get("severity") in ("error", "warning"))
            listing.border_title = f"Findings ({len(findings)})"
            listing.border_subtitle = f"{serious} to fix" if serious else ""
            rec_text = Text()
            for r in recs:
                rec_text.append("• ", style="bold green")
                rec_text.append(recommendation_line(r) + "\n")
            if not recs:
                rec_text.append("none yet", style="dim")
            rec_text.rstrip()
            self.query_one("#recommendations", Static).update(rec_text)
        self._render_finding_detail()

    def _render_finding_detail(self) -> None:
        st = self.state
        detail = self.query_one("#finding-detail", Static)
        if st is None or not st.findings:
            detail.update(Text("No findings so far: they appear here as soon as they are found.", style="dim"))
            return
        row = self.query_one("#findings", OptionList).highlighted or 0
        f = st.findings[min(max(row, 0), len(st.findings) - 1)]
        out = Text()
        out.append(f"{f.get('file') or '<run>'}" + (f":{f.get('line')}" if f.get("line") else ""), style="underline")
        if f.get("step") is not None:
            out.append(f"  (found at step {f['step']})", style="dim")
        out.append("\n")
        out.append(str(f.get("message") or ""))
        detail.update(out)

    @staticmethod
    def _cursor_key(table: DataTable[Any]) -> RowKey | None:
        if table.row_count == 0:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None

    @staticmethod
    def _restore_cursor(table: DataTable[Any], key: RowKey | None) -> None:
        if key is None:
            return
        try:
            table.move_cursor(row=table.get_row_index(key), animate=False)
        except Exception:
            pass

    # -- actions --------------------------------------------------------------------------------
    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "findings":
            self._render_finding_detail()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.data_table.id != "modules":
            return
        key = str(event.column_key.value)
        if key == self.sort_by:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_by, self.sort_reverse = key, key not in _TEXT_COLUMNS
        self._render_modules()

    def action_sort_next(self) -> None:
        i = SORT_CYCLE.index(self.sort_by) if self.sort_by in SORT_CYCLE else -1
        self.sort_by = SORT_CYCLE[(i + 1) % len(SORT_CYCLE)]
        self.sort_reverse = self.sort_by not in _TEXT_COLUMNS
        self._render_modules()

    def action_sort_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._render_modules()

    def action_focus_panel(self, widget_id: str) -> None:
        self.query_one(f"#{widget_id}").focus()

    def action_toggle_log(self) -> None:
        log = self.query_one("#log")
        if self.log_source is None:
            self.notify("This view has no script output (the run was not started by this UI).")
            return
        log.toggle_class("-big")

    def action_interrupt_run(self) -> None:
        if self.interrupt is None:
            self.notify("This UI did not start the run, so it does not stop it. q closes the UI.", severity="warning")
            return
        if self.link == "ended":
            self.notify("The run is already over; q closes the UI.")
            return
        self.notify(self.interrupt(), title="Interrupt", severity="warning")

    def action_close_ui(self) -> None:
        if self.embedded:
            self.action_back()
        else:
            self.app.exit()

    def action_back(self) -> None:
        if self.embedded:
            self.feed.close()
            self.app.pop_screen()

    def on_unmount(self) -> None:
        self.feed.close()


class RunApp(App[None]):
    """``memprof run --tui``: the run screen alone, in the foreground."""

    TITLE = "memprof"
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        feed: RunFeed,
        *,
        gpu: GpuBackend | None = None,
        log: LogSource | None = None,
        interrupt: Callable[[], str] | None = None,
        hint: str = CLOSING_HINT,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.1,
        gpu_interval: float = 2.0,
    ) -> None:
        super().__init__()
        self.run_screen = RunScreen(
            feed, gpu=gpu, log=log, interrupt=interrupt, hint=hint, clock=clock, poll_interval=poll_interval,
            gpu_interval=gpu_interval,
        )

    def on_mount(self) -> None:
        self.push_screen(self.run_screen)

