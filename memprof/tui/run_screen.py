"""The live view of one run: step, memory against the budget, the timeline, modules, findings.

Fed by a :class:`~memprof.tui.feed.RunFeed` passed in (the live channel, or a fake in tests) and
polled a few times a second; it never waits on the run, and the run never waits on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

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
from memprof.tui.format import budget_of, recommendation_line
from memprof.tui.panels import (
    MODULE_COLUMNS,
    SORT_CYCLE,
    TEXT_COLUMNS,
    banner,
    column_label,
    ended_text,
    finding_detail,
    finding_key,
    finding_option,
    memory_box,
    module_cells,
    new_finding_notice,
    recommendations_text,
    run_box,
    sort_modules,
    top_bar,
)
from memprof.tui.widgets import MemoryChart, gpu_panel

CLOSING_HINT = (
    "q closes this UI only: the run goes on (output continues in this terminal) and still writes its report"
    " · ctrl+c interrupts the run"
)
VIEWER_HINT = "q/escape: back to the monitor (the run is not affected)"


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
            text = new_finding_notice(f)
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
        return ended_text(status, self.exit_code, self.state.report_path if self.state else None)

    def _render_top(self) -> None:
        if not self._ready:
            return
        self.query_one("#topbar", Static).update(top_bar(self.state, self._elapsed()))
        content, css_class = banner(self.link, self.link_message, self.state, self.exit_code)
        line = self.query_one("#banner", Static)
        line.update(content)
        line.set_classes(css_class)
        line.display = self.link != "live"

    def _render_stats(self) -> None:
        st = self.state
        self.query_one("#step", Digits).update(f"{st.step:,}" if st else "0")
        self.query_one("#run-box", Static).update(run_box(st))
        self.query_one("#memory-box", Static).update(memory_box(st))

    def _render_devices(self) -> None:
        if not self._ready:
            return
        own = {self.state.pid} if self.state else set()
        self.query_one("#devices", Static).update(gpu_panel(self.gpu_status, own))

    def sorted_modules(self) -> list[dict[str, Any]]:
        return sort_modules(self.state.modules if self.state else [], self.sort_by, self.sort_reverse)

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
            table.add_row(*module_cells(m), key=str(m.get("name")))
        arrow = "▼" if self.sort_reverse else "▲"
        label = column_label(self.sort_by)
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
            self.query_one("#recommendations", Static).update(recommendations_text(recs))
        self._render_finding_detail()

    def _render_finding_detail(self) -> None:
        findings = self.state.findings if self.state else []
        row = self.query_one("#findings", OptionList).highlighted or 0
        self.query_one("#finding-detail", Static).update(finding_detail(findings, row))

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
            self.sort_by, self.sort_reverse = key, key not in TEXT_COLUMNS
        self._render_modules()

    def action_sort_next(self) -> None:
        i = SORT_CYCLE.index(self.sort_by) if self.sort_by in SORT_CYCLE else -1
        self.sort_by = SORT_CYCLE[(i + 1) % len(SORT_CYCLE)]
        self.sort_reverse = self.sort_by not in TEXT_COLUMNS
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

