"""Widgets shared by the screens: the memory chart and the GPU panel's text."""

from __future__ import annotations

from rich.text import Text
from textual_plotext import PlotextPlot

from memprof.hw.gpu import GpuStatus
from memprof.live.state import LiveState
from memprof.tui.format import bar, pct
from memprof.units import fmt_bytes

_UNITS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024), ("B", 1))
MAX_STEP_LINES = 12  # step boundaries drawn at most; more would paint the chart solid


def unit_for(n: float) -> tuple[str, int]:
    for name, size in _UNITS:
        if n >= size:
            return name, size
    return "B", 1


def thin_marks(marks: list[float], lo: float, hi: float, most: int = MAX_STEP_LINES) -> list[float]:
    """The step boundaries inside [lo, hi], keeping at most ``most``, evenly spaced in time."""
    inside = [m for m in marks if lo <= m <= hi]
    if len(inside) <= most:
        return inside
    gap = (hi - lo) / most
    kept: list[float] = []
    for m in inside:
        if not kept or m - kept[-1] >= gap:
            kept.append(m)
    return kept


class MemoryChart(PlotextPlot):
    """Memory over time: the timeline, step boundaries (dotted), the peak (◆) and the budget line."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._key: tuple[object, ...] = ()
        self.show_state(None)

    def show_state(self, state: LiveState | None, budget: int | None = None) -> None:
        samples = state.samples if state else []
        key = (
            len(samples), samples[-1].t if samples else None, samples[0].t if samples else None,
            state.peak_bytes if state else None, budget, len(state.step_marks) if state else 0,
        )
        if key == self._key:
            return
        self._key = key
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("seconds")
        if not samples or state is None:
            plt.title("Memory over time: waiting for samples…")
            self.refresh()
            return
        top = max(max(s.bytes for s in samples), state.peak_bytes)
        show_budget = bool(budget) and top >= 0.25 * (budget or 0)
        unit, scale = unit_for(max(top, budget or 0) if show_budget else top)
        xs = [s.t for s in samples]
        ys = [s.bytes / scale for s in samples]
        lo, hi = xs[0], xs[-1]
        for mark in thin_marks(state.step_marks, lo, hi):
            plt.vline(mark, "gray")
        if show_budget and budget:
            plt.hline(budget / scale, "red")
        plt.plot(xs, ys, marker="braille", color="cyan")
        peak_i = max(range(len(samples)), key=lambda i: samples[i].bytes)
        plt.scatter([xs[peak_i]], [ys[peak_i]], marker="◆", color="orange")
        plt.ylim(0, max(ys + [budget / scale if show_budget and budget else 0]) * 1.1 or 1)
        if hi > lo:
            plt.xlim(lo, hi)
        peak_at = f" at step {state.peak_step}" if state.peak_step is not None else ""
        budget_note = f"  ── budget {fmt_bytes(budget)}" if show_budget else ""
        plt.title(f"Memory ({unit}) · ◆ peak {fmt_bytes(state.peak_bytes)}{peak_at} · ┊ step boundaries{budget_note}")
        self.refresh()


def gpu_panel(status: GpuStatus | None, own_pids: set[int] | frozenset[int] = frozenset(), width: int = 44) -> Text:
    """Per GPU: name, used/total with a bar, utilisation, and the processes on it."""
    out = Text()
    if status is None:
        out.append("Looking for GPUs…", style="dim")
        return out
    if not status.available or not status.devices:
        out.append("No GPU", style="bold")
        if status.reason:
            out.append(f"\n{status.reason}", style="dim")
        return out
    bar_w = max(width - 26, 8)
    for n, d in enumerate(status.devices):
        if n:
            out.append("\n")
        out.append(f"GPU {d.index} ", style="bold")
        out.append(d.name[: width - 6])
        frac = d.memory_fraction
        style = "red" if frac > 0.9 else "yellow" if frac > 0.75 else "green"
        out.append("\n ")
        out.append(bar(frac, bar_w), style=style)
        out.append(f" {fmt_bytes(d.memory_used_bytes)}/{fmt_bytes(d.memory_total_bytes)}")
        util = "—" if d.utilization_percent is None else f"{d.utilization_percent:.0f}%"
        out.append(f"\n util {util}  mem {pct(d.memory_used_bytes, d.memory_total_bytes)}", style="dim")
        for p in d.processes[:4]:
            mine = p.pid in own_pids
            out.append(f"\n {p.pid:>7} {p.name[: width - 22]:<{width - 22}} {fmt_bytes(p.used_bytes):>9}",
                       style="bold cyan" if mine else "")
        if len(d.processes) > 4:
            out.append(f"\n  … {len(d.processes) - 4} more processes", style="dim")
        if not d.processes:
            out.append("\n  no processes", style="dim")
    if status.reason:
        out.append(f"\n{status.reason}", style="dim")
    return out
