"""``memprof monitor``: the GPUs of this machine and every memprof run publishing on it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from memprof.hw.gpu import GpuBackend, GpuStatus
from memprof.live.client import LiveRun
from memprof.tui.feed import RunFeed, RunsSource, SocketFeed
from memprof.tui.format import STATUS_LABEL, bar, budget_of, command_line, diagnoses, duration, pct, top_finding
from memprof.tui.panels import finding_option
from memprof.tui.run_screen import VIEWER_HINT, RunScreen
from memprof.units import fmt_bytes

MONITOR_HINT = "enter: live view of the highlighted run · r: refresh now · q: quit (no run is affected)"


class RunViewScreen(RunScreen):
    """A run's live view opened from the monitor: q goes back to the list."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("q", "close_ui", "Back to the monitor")]


def _socket_feed(run: LiveRun) -> RunFeed:
    return SocketFeed(run.path)


class MonitorApp(App[None]):
    """GPUs (memory, utilisation, processes) and memprof runs, refreshed every ``interval`` seconds."""

    CSS_PATH = "monitor.tcss"
    TITLE = "memprof monitor"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("enter", "open_run", "Open run", show=True),
        Binding("g", "focus_panel('gpus')", "GPUs", show=False),
        Binding("u", "focus_panel('runs')", "Runs", show=False),
    ]

    def __init__(
        self,
        gpu: GpuBackend,
        runs: RunsSource,
        *,
        interval: float = 1.0,
        live_directory: str = "",
        feed_factory: Callable[[LiveRun], RunFeed] = _socket_feed,
        clock: Callable[[], float] = time.time,
        hostname: str | None = None,
    ) -> None:
        super().__init__()
        self.gpu = gpu
        self.runs_source = runs
        self.interval = interval
        self.live_directory = live_directory
        self.feed_factory = feed_factory
        self.clock = clock
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.gpu_status: GpuStatus | None = None
        self.runs: list[LiveRun] = []
        self.refreshes = 0

    def compose(self) -> ComposeResult:
        yield Static(id="topbar")
        yield DataTable(id="gpus", classes="panel", cursor_type="row")
        yield Static(id="no-gpu", classes="panel")
        yield DataTable(id="procs", classes="panel", cursor_type="row")
        yield DataTable(id="runs", classes="panel", cursor_type="row", zebra_stripes=True)
        yield Static(id="run-detail", classes="panel")
        yield Static(MONITOR_HINT, id="hint")
        yield Footer()

    def on_mount(self) -> None:
        gpus = self.query_one("#gpus", DataTable)
        for label, width in (("GPU", 3), ("Name", 26), ("Memory", 30), ("Used", 10), ("Total", 10), ("Mem", 4),
                             ("Util", 5), ("Procs", 5)):
            gpus.add_column(label, width=width)
        procs = self.query_one("#procs", DataTable)
        for label, width in (("GPU", 3), ("PID", 8), ("Process", 50), ("Memory", 10), ("memprof run", 40)):
            procs.add_column(label, width=width)
        runs = self.query_one("#runs", DataTable)
        for label, width in (("PID", 7), ("Script", 26), ("Status", 11), ("Step", 7), ("Batch", 5), ("Elapsed", 7),
                             ("Current", 9), ("Peak", 9), ("Budget", 6), ("Findings", 8), ("Top finding", 28)):
            runs.add_column(label, width=width)
        titles = {"gpus": "GPUs", "no-gpu": "GPUs", "procs": "GPU processes", "runs": "memprof runs",
                  "run-detail": "Run"}
        for wid, title in titles.items():
            self.query_one(f"#{wid}").border_title = title
        self.show(None, [])
        self.refresh_data()
        self.set_interval(self.interval, self.refresh_data)
        runs.focus()

    # -- data -------------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="monitor")
    def refresh_data(self) -> None:
        """Ask the GPUs and the live directory off the UI thread, then show what they said."""
        status = self.gpu.snapshot()
        try:
            found = self.runs_source.list_runs()
        except Exception:  # a broken socket file must not take the monitor down
            found = []
        self.call_from_thread(self.show, status, found)

    def show(self, status: GpuStatus | None, runs: list[LiveRun]) -> None:
        if status is not None:
            self.refreshes += 1
        self.gpu_status = status
        self.runs = list(runs)
        self._render_top()
        self._render_gpus()
        self._render_runs()
        self._render_detail()

    def _render_top(self) -> None:
        status = self.gpu_status
        top = Text()
        top.append(" memprof monitor ", style="bold reverse")
        top.append(f"  {self.hostname}  ", style="bold")
        if status is None:
            top.append("looking…", style="dim")
        else:
            top.append(status.summary if status.available else "no GPU", style="" if status.available else "yellow")
            if status.driver:
                top.append(f", driver {status.driver}", style="dim")
        n = len(self.runs)
        top.append(f"   {n} memprof run{'s' if n != 1 else ''}", style="bold cyan" if n else "dim")
        top.append(f"   every {self.interval:g} s", style="dim")
        self.query_one("#topbar", Static).update(top)

    def _render_gpus(self) -> None:
        status = self.gpu_status
        gpus = self.query_one("#gpus", DataTable)
        procs = self.query_one("#procs", DataTable)
        no_gpu = self.query_one("#no-gpu", Static)
        available = status is not None and status.available and bool(status.devices)
        gpus.display = procs.display = available
        no_gpu.display = not available
        if not available:
            text = Text()
            if status is None:
                text.append("Looking for GPUs…", style="dim")
            else:
                text.append("No GPU on this machine", style="bold yellow")
                if status.reason:
                    text.append(f" ({status.reason})", style="dim")
                text.append(".\nmemprof runs on this machine are still listed below.")
            no_gpu.update(text)
            return
        assert status is not None
        by_pid = {r.state.pid: r for r in self.runs}
        gpus.clear()
        procs.clear()
        for d in status.devices:
            frac = d.memory_fraction
            style = "red" if frac > 0.9 else "yellow" if frac > 0.75 else "green"
            gpus.add_row(
                str(d.index), d.name, Text(bar(frac, 30), style=style),
                Text(fmt_bytes(d.memory_used_bytes), justify="right"),
                Text(fmt_bytes(d.memory_total_bytes), justify="right"),
                Text(pct(d.memory_used_bytes, d.memory_total_bytes), justify="right"),
                Text("—" if d.utilization_percent is None else f"{d.utilization_percent:.0f}%", justify="right"),
                Text(str(len(d.processes)), justify="right"),
            )
            for p in d.processes:
                run = by_pid.get(p.pid)
                procs.add_row(
                    str(d.index), str(p.pid), p.name, Text(fmt_bytes(p.used_bytes), justify="right"),
                    Text(f"step {run.state.step} · {command_line(run.state)}", style="bold cyan") if run else "",
                )
        procs.border_title = f"GPU processes ({procs.row_count})"

    def _render_runs(self) -> None:
        table = self.query_one("#runs", DataTable)
        keep = table.cursor_row if table.row_count else 0
        table.clear()
        now = self.clock()
        for run in self.runs:
            s = run.state
            limit, _ = budget_of(s)
            status_style = {"running": "green", "ok": "cyan", "interrupted": "yellow"}.get(s.status, "red")
            n_diag = len(diagnoses(s))
            table.add_row(
                str(s.pid), command_line(s), Text(STATUS_LABEL.get(s.status, s.status), style=status_style),
                Text(f"{s.step:,}", justify="right"), Text("—" if s.batch_size is None else str(s.batch_size),
                                                          justify="right"),
                Text(duration(now - s.started_at) if s.started_at else "—", justify="right"),
                Text(fmt_bytes(s.current_bytes), justify="right"), Text(fmt_bytes(s.peak_bytes), justify="right"),
                Text(pct(s.peak_bytes, limit), justify="right"),
                Text(str(n_diag), style="bold yellow" if n_diag else "", justify="right"),
                top_finding(s),
                key=str(run.path),
            )
        if self.runs:
            table.move_cursor(row=min(keep, len(self.runs) - 1), animate=False)
        table.border_title = f"memprof runs ({len(self.runs)})"
        where = f" in {self.live_directory}" if self.live_directory else ""
        table.border_subtitle = "" if self.runs else f"none found{where}"

    def selected_run(self) -> LiveRun | None:
        table = self.query_one("#runs", DataTable)
        if not self.runs or table.row_count == 0:
            return None
        return self.runs[min(max(table.cursor_row, 0), len(self.runs) - 1)]

    def _render_detail(self) -> None:
        detail = self.query_one("#run-detail", Static)
        run = self.selected_run()
        out = Text()
        if run is None:
            out.append("No memprof run is publishing on this machine.\n", style="bold")
            out.append("Start one with `memprof run train.py` (or `memprof run --tui train.py`); it appears here "
                       "while it runs.", style="dim")
            detail.update(out)
            return
        s = run.state
        detail.border_title = f"Run {s.pid}: {command_line(s)}"
        limit, what = budget_of(s)
        out.append(f"step {s.step:,}", style="bold")
        out.append(f" · batch {s.batch_size if s.batch_size is not None else '—'} · current "
                   f"{fmt_bytes(s.current_bytes)} · peak {fmt_bytes(s.peak_bytes)}")
        if limit:
            out.append(f" ({pct(s.peak_bytes, limit)} of {what} {fmt_bytes(limit)})")
        if s.report_path:
            out.append(f" · report {s.report_path}", style="dim")
        if not s.findings:
            out.append("\nNo findings so far.", style="dim")
        for f in s.findings[:4]:
            out.append("\n")
            out.append_text(finding_option(f))
        if len(s.findings) > 4:
            out.append(f"\n… {len(s.findings) - 4} more (enter: live view)", style="dim")
        detail.update(out)

    # -- actions --------------------------------------------------------------------------------
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "runs":
            self._render_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "runs":
            self.action_open_run()

    def action_focus_panel(self, widget_id: str) -> None:
        self.query_one(f"#{widget_id}").focus()

    def action_refresh_now(self) -> None:
        self.refresh_data()

    def action_open_run(self) -> None:
        run = self.selected_run()
        if run is None:
            self.notify("No run to open.")
            return
        screen = RunViewScreen(self.feed_factory(run), gpu=self.gpu, hint=VIEWER_HINT, embedded=True,
                               clock=self.clock)
        self.push_screen(screen)

    def state_rows(self) -> list[list[Any]]:
        """The runs table as plain values (for tests and debugging)."""
        table = self.query_one("#runs", DataTable)
        return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
