"""memprof's overhead beside the alternatives, in one command.

    python benchmarks/overhead.py            # the full run (a few minutes), results under benchmarks/results/
    python benchmarks/overhead.py --quick    # a smoke run (seconds): same code paths, few samples

Step time (steady state, after warm-up) of each tool against plain PyTorch, in the same process:
for each round and each tool, a block of plain steps, then a block of steps under the tool (the
tool entered fresh, warmed up, then timed); the figure is the median over rounds of the ratio
profiled / plain, so that drift of the machine (other processes, thermal) cancels. Plain blocks
before the first round and after the last say what a tool leaves in the process (state on the
thread, a hook not removed): it slows the plain blocks too, which the paired ratio cannot show.

Tools: plain PyTorch; memprof's default (``memprof run``: detail for the first steps, then
watching, with periodic re-arms); memprof's most detailed mode (``--detail full``: every op
counted on every step); ``torch.profiler`` with ``profile_memory``, ``record_shapes`` and
``with_stack``; PyTorch's ``MemTracker`` (``torch.distributed._tools.mem_tracker``).

Also: start-up of ``memprof run`` over plain ``python`` (whole commands, alternated), and the
time memprof takes to build its report after 10,000 training steps.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.models import ALL_WORKLOADS, LOOPS, WORKLOADS, Trainer  # noqa: E402

TOOLS = ("memprof", "memprof_full", "torch_profiler", "mem_tracker")
EXTRA_TOOLS = ("noop_dispatch",)  # on request (--tools): the floor of any Python TorchDispatchMode
TOOL_LABELS = {
    "plain": "plain PyTorch",
    "memprof": "memprof (default)",
    "memprof_full": "memprof --detail full",
    "torch_profiler": "torch.profiler (memory, shapes, stack)",
    "mem_tracker": "MemTracker",
    "noop_dispatch": "no-op Python dispatch mode",
}
# The issue's budgets, on CPU, steady state.
BUDGETS: list[tuple[str, str, float]] = [
    ("memprof", "cnn", 1.03),
    ("memprof", "tiny_mlp", 1.15),
    ("memprof_full", "cnn", 1.10),
    ("memprof_full", "tiny_mlp", 2.0),
    # Loops off the canonical one: per-op bound, the default mode's budget.
    ("memprof", "manual_sgd", 1.15),
    ("memprof", "lbfgs", 1.15),
    ("memprof", "rl", 1.15),
]
STARTUP_BUDGET_S = 0.5
REPORT_BUDGET_S = 1.0
REPORT_STEPS = 10_000


# -- the tools ----------------------------------------------------------------------------------
class Tool:
    """Enter before a block of steps, exit after it."""

    name = "plain"
    warmup = 3

    def enter(self, trainer: Trainer) -> None:
        pass

    def step_fn(self, trainer: Trainer) -> Callable[[], None]:
        """One training step as a user of this tool writes it."""
        return trainer.step

    def exit(self) -> None:
        pass


class MemprofTool(Tool):
    def __init__(self, detail: str) -> None:
        self.name = "memprof" if detail == "auto" else "memprof_full"
        self.detail = detail
        self.warmup = 15  # past the first detail_steps (10) of the default mode
        self.session: Any = None

    def enter(self, trainer: Trainer) -> None:
        from memprof.session import Session, SessionConfig

        # What `memprof run` builds, around the training loop instead of the whole script.
        self.session = Session(SessionConfig(script=__file__, detail=self.detail)).start()

    def exit(self) -> None:
        self.session.stop()
        self.session = None


class TorchProfilerTool(Tool):
    name = "torch_profiler"

    def __init__(self) -> None:
        self.prof: Any = None

    def enter(self, trainer: Trainer) -> None:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU]
        if trainer.x.is_cuda:
            acts.append(ProfilerActivity.CUDA)
        self.prof = profile(activities=acts, profile_memory=True, record_shapes=True, with_stack=True)
        self.prof.__enter__()

    def exit(self) -> None:
        self.prof.__exit__(None, None, None)
        self.prof = None


class MemTrackerTool(Tool):
    name = "mem_tracker"

    def __init__(self) -> None:
        self.mt: Any = None

    def enter(self, trainer: Trainer) -> None:
        from torch.distributed._tools.mem_tracker import MemTracker

        self.mt = MemTracker()
        self.mt.track_external(*(o for o in (trainer.model, trainer.opt, trainer.x, trainer.y) if o is not None))
        self.mt.__enter__()

    def step_fn(self, trainer: Trainer) -> Callable[[], None]:
        mt = self.mt

        def step() -> None:  # MemTracker refuses a second iteration unless its module stats are reset
            trainer.step()
            mt.reset_mod_stats()

        return step

    def exit(self) -> None:
        self.mt.__exit__(None, None, None)
        self.mt = None


class NoopDispatchTool(Tool):
    """A TorchDispatchMode that only calls each op, the way memprof's tracker does: what any
    per-op Python hook costs before it does anything (the detailed mode's floor)."""

    name = "noop_dispatch"

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        from memprof.collect.storage import _skip_dynamo

        class Noop(TorchDispatchMode):
            @classmethod
            def _should_skip_dynamo(cls) -> bool:
                return not _skip_dynamo(cls.__dict__["__torch_dispatch__"].__code__)

            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                return func._op(*args, **kwargs) if kwargs else func._op(*args)

        self.mode = Noop()

    def enter(self, trainer: Trainer) -> None:
        self.mode.__enter__()

    def exit(self) -> None:
        self.mode.__exit__(None, None, None)


def make_tool(name: str) -> Tool:
    if name == "memprof":
        return MemprofTool("auto")
    if name == "memprof_full":
        return MemprofTool("full")
    if name == "torch_profiler":
        return TorchProfilerTool()
    if name == "mem_tracker":
        return MemTrackerTool()
    if name == "noop_dispatch":
        return NoopDispatchTool()
    raise ValueError(name)


# -- step time ------------------------------------------------------------------------------------
@dataclass
class Cell:
    model: str
    tool: str
    plain_ms: float  # median over rounds of the plain block's mean step time (wall clock)
    tool_ms: float
    ratio: float  # median over rounds of tool block / plain block (wall clock)
    ratios: list[float] = field(default_factory=list)
    plain_cpu_ms: float = 0.0  # the same with the process's CPU time (all its threads)
    tool_cpu_ms: float = 0.0
    cpu_ratio: float = float("nan")
    cpu_ratios: list[float] = field(default_factory=list)
    steps_per_block: int = 0
    detailed_in_block: list[int] = field(default_factory=list)  # memprof: steps run in detail, per block
    # Plain blocks before any tool ran in the process and after all of them (CPU time): what a tool
    # leaves behind (torch state on the thread, a hook not removed) slows plain code too, which the
    # paired ratio cannot show (its plain blocks pay it as well).
    pristine_cpu_ms: float = 0.0
    after_cpu_ms: float = 0.0
    error: str | None = None


def _sync(trainer: Trainer) -> None:
    if trainer.x.is_cuda:
        torch.cuda.synchronize()


def timed_block(trainer: Trainer, steps: int, step: Callable[[], None] | None = None) -> tuple[float, float]:
    """Mean seconds per step over ``steps`` steps: (wall clock, CPU time of the process)."""
    step = step or trainer.step
    _sync(trainer)
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(trainer)
    t1 = time.perf_counter()
    c1 = time.process_time()
    return (t1 - t0) / steps, (c1 - c0) / steps


MIN_STEPS = 8
PLAIN_CHECK_BLOCKS = 5  # plain blocks before the first round and after the last


def steps_for(trainer: Trainer, block_seconds: float) -> int:
    for _ in range(5):
        trainer.step()
    per = min(timed_block(trainer, 3)[0] for _ in range(3))
    return max(MIN_STEPS, int(block_seconds / max(per, 1e-6)))


def measure_model(model: str, tools: list[str], rounds: int, block_seconds: float, device: str,
                  log: Callable[[str], None]) -> list[Cell]:
    trainer = ALL_WORKLOADS[model].make(device)
    n = steps_for(trainer, block_seconds)
    n_tool = dict.fromkeys(tools, n)  # a slow tool gets fewer steps: the figure is a mean per step
    plain: dict[str, list[tuple[float, float]]] = {t: [] for t in tools}
    timed: dict[str, list[tuple[float, float]]] = {t: [] for t in tools}
    detailed: dict[str, list[int]] = {t: [] for t in tools}
    errors: dict[str, str] = {}
    pristine = [timed_block(trainer, n)[1] for _ in range(PLAIN_CHECK_BLOCKS)]
    for r in range(rounds):
        order = tools[r % len(tools):] + tools[: r % len(tools)]  # rotate, so no tool always goes first
        for name in order:
            if name in errors:
                continue
            gc.collect()
            p = timed_block(trainer, n)
            tool = make_tool(name)
            try:
                tool.enter(trainer)
                try:
                    fn = tool.step_fn(trainer)
                    for _ in range(tool.warmup):
                        fn()
                    first = len(tool.session.iterations) if isinstance(tool, MemprofTool) else 0
                    q = timed_block(trainer, n_tool[name], fn)
                    if isinstance(tool, MemprofTool):
                        detailed[name].append(sum(1 for it in tool.session.iterations[first:] if it.detailed))
                finally:
                    tool.exit()
                if q[0] * n_tool[name] > 2 * block_seconds:
                    n_tool[name] = max(MIN_STEPS, int(2 * block_seconds / q[0]))
            except Exception as e:  # one tool failing must not lose the others' figures
                errors[name] = f"{type(e).__name__}: {e}"[:300]
                log(f"  {model:9s} {name:15s} failed: {errors[name]}")
                continue
            plain[name].append(p)
            timed[name].append(q)
            log(f"  {model:9s} {name:15s} round {r + 1}/{rounds}: plain {p[0] * 1e3:8.3f} ms  "
                f"tool {q[0] * 1e3:8.3f} ms  x{q[0] / p[0]:.3f} wall  x{q[1] / max(p[1], 1e-12):.3f} cpu")
    gc.collect()
    after = [timed_block(trainer, n)[1] for _ in range(PLAIN_CHECK_BLOCKS)]
    cells = []
    med = statistics.median
    for name in tools:
        if not plain[name]:
            cells.append(Cell(model, name, 0.0, 0.0, float("nan"), steps_per_block=n, error=errors.get(name)))
            continue
        ratios = [q[0] / p[0] for p, q in zip(plain[name], timed[name], strict=True)]
        cpu_ratios = [q[1] / max(p[1], 1e-12) for p, q in zip(plain[name], timed[name], strict=True)]
        cells.append(Cell(
            model=model, tool=name, plain_ms=med(p[0] for p in plain[name]) * 1e3,
            tool_ms=med(q[0] for q in timed[name]) * 1e3, ratio=med(ratios), ratios=[round(x, 4) for x in ratios],
            plain_cpu_ms=med(p[1] for p in plain[name]) * 1e3, tool_cpu_ms=med(q[1] for q in timed[name]) * 1e3,
            cpu_ratio=med(cpu_ratios), cpu_ratios=[round(x, 4) for x in cpu_ratios],
            steps_per_block=n_tool[name], detailed_in_block=detailed[name], error=errors.get(name),
            pristine_cpu_ms=med(pristine) * 1e3, after_cpu_ms=med(after) * 1e3,
        ))
    return cells


# -- start-up -------------------------------------------------------------------------------------
STARTUP_SCRIPT = """\
import torch
from torch import nn

model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters())
x, y = torch.randn(16, 32), torch.randint(0, 10, (16,))
for _ in range(3):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
"""


def memprof_command() -> list[str]:
    exe = Path(sys.executable).with_name("memprof")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("memprof")
    return [found] if found else [sys.executable, "-m", "memprof"]


@dataclass
class Startup:
    python_s: float
    memprof_s: float
    over_s: float  # median of the paired differences
    runs: int
    command: str


def measure_startup(runs: int, log: Callable[[str], None], warm: bool = True) -> Startup:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "startup_probe.py"
        script.write_text(STARTUP_SCRIPT)
        plain_cmd = [sys.executable, str(script)]
        mp_cmd = [*memprof_command(), "run", str(script)]
        env = dict(os.environ)
        env.pop("MEMPROF_LIVE_SOCKET", None)

        def wall(cmd: list[str]) -> float:
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
            t = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-500:]}")
            return t

        if warm:  # the file cache
            wall(plain_cmd)
            wall(mp_cmd)
        ps, ms, diffs = [], [], []
        for i in range(runs):
            a, b = wall(plain_cmd), wall(mp_cmd)
            ps.append(a)
            ms.append(b)
            diffs.append(b - a)
            log(f"  start-up {i + 1}/{runs}: python {a:.3f} s  memprof run {b:.3f} s  (+{b - a:.3f} s)")
    return Startup(statistics.median(ps), statistics.median(ms), statistics.median(diffs), runs,
                   "memprof run startup_probe.py  vs  python startup_probe.py")


# -- the report -----------------------------------------------------------------------------------
@dataclass
class ReportBuild:
    steps: int
    detailed_steps: int
    run_s: float  # the training steps themselves, under the default mode
    build_s: float  # Session.stop(): the doctor, the advisor, the report object
    json_s: float  # the report to JSON text
    json_bytes: int


def measure_report(steps: int, log: Callable[[str], None]) -> ReportBuild:
    from memprof.model.codec import report_to_dict
    from memprof.session import Session, SessionConfig

    trainer = WORKLOADS["tiny_mlp"].make()
    session = Session(SessionConfig(script=__file__)).start()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    run_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    report = session.stop()
    build_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    text = json.dumps(report_to_dict(report))
    json_s = time.perf_counter() - t2
    detailed = sum(1 for it in session.iterations if it.detailed)
    log(f"  report after {len(report.steps)} steps ({detailed} in detail): build {build_s:.3f} s, "
        f"JSON {json_s:.3f} s")
    return ReportBuild(len(report.steps), detailed, run_s, build_s, json_s, len(text))


# -- output -----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "cpu": cpu, "cores": usable, "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    }
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        from memprof._version import __version__

        info["memprof"] = __version__
    except Exception:
        pass
    return info


def op_hook_feed(log: Callable[[str], None]) -> str:
    """Which feed memprof's storage tracker runs on here: the C++ op hook, built now if it can be
    (as ``--detail full`` would), so that every round measures the same one; or the Python mode."""
    from memprof.collect import ophook

    hook = ophook.load(build=True, log=log)
    if hook is not None:
        return "C++ op hook"
    return f"Python dispatch mode ({ophook.failure() or 'op hook turned off'})"


def _fmt_ratio(c: Cell | None) -> str:
    if c is None:
        return "-"
    if c.error and not c.ratios:
        return "failed"
    return f"{c.tool_ms:.3f} ms, x{c.ratio:.2f} wall, x{c.cpu_ratio:.2f} cpu"


def budget_rows(cells: list[Cell], startup: Startup | None, report: ReportBuild | None,
                basis: str = "cpu") -> list[dict[str, Any]]:
    """The issue's budgets; step-time verdicts on ``basis``: "cpu" (process CPU time) or "wall"."""
    by = {(c.tool, c.model): c for c in cells}
    rows: list[dict[str, Any]] = []
    for tool, model, limit in BUDGETS:
        c = by.get((tool, model))
        if c is None or not c.ratios:
            continue
        value = c.cpu_ratio if basis == "cpu" else c.ratio
        rows.append({"what": f"{TOOL_LABELS[tool]}, {model}", "budget": f"<= x{limit:.2f}",
                     "measured": f"x{c.cpu_ratio:.3f} cpu, x{c.ratio:.3f} wall", "met": value <= limit})
    if startup is not None:
        rows.append({"what": "start-up over plain python", "budget": f"<= {STARTUP_BUDGET_S:.1f} s",
                     "measured": f"{startup.over_s:+.3f} s", "met": startup.over_s <= STARTUP_BUDGET_S})
    if report is not None:
        rows.append({"what": f"report for {report.steps} steps", "budget": f"< {REPORT_BUDGET_S:.0f} s",
                     "measured": f"{report.build_s + report.json_s:.3f} s",
                     "met": report.build_s + report.json_s < REPORT_BUDGET_S if report.steps >= REPORT_STEPS else None})
    return rows


def render(cells: list[Cell], startup: Startup | None, report: ReportBuild | None, info: dict[str, Any],
           argv: list[str], rounds: int, block_seconds: float, basis: str = "cpu") -> str:
    models = list(dict.fromkeys(c.model for c in cells))
    tools = list(dict.fromkeys(c.tool for c in cells))
    by = {(c.tool, c.model): c for c in cells}
    lines = [
        f"# memprof overhead, {dt.date.today().isoformat()}",
        "",
        "Command: `" + " ".join(["python benchmarks/overhead.py", *argv]) + "`",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores usable, {info['platform']}, Python {info['python']}, "
        f"torch {info['torch']} ({info['torch_threads']} intra-op thread(s))"
        + (f", GPU {info['gpu']}" if info.get("gpu") else "")
        + (f"; load average at start {info['load_average']}" if info.get("load_average") else "") + ".",
        "",
        *([f"memprof's storage tracker ran on: {info['memprof_feed']}.", ""] if info.get("memprof_feed") else []),
        f"Step time, steady state: per model and tool, {rounds} round(s) of a plain block (about {block_seconds:g} s) "
        "then a block under the tool, entered fresh and warmed up. Each cell: the median step time under the tool, "
        "and the medians of the paired ratios tool / plain, in wall-clock time and in the process's CPU time "
        "(all threads; immune to other processes taking the cores).",
        "",
        "| model | plain PyTorch | " + " | ".join(TOOL_LABELS[t] for t in tools) + " |",
        "| --- | --- | " + " | ".join("---" for _ in tools) + " |",
    ]
    for m in models:
        first = next(c for c in cells if c.model == m)
        plain_ms = statistics.median([c.plain_ms for c in cells if c.model == m and c.ratios] or [first.plain_ms])
        lines.append(f"| {m} | {plain_ms:.3f} ms | " + " | ".join(_fmt_ratio(by.get((t, m))) for t in tools) + " |")
    counts = [c for c in cells if c.tool == "memprof" and c.detailed_in_block]
    if counts:
        lines.append("")
        lines.append("memprof's default mode re-arms detail periodically (2 steps after 16, 32, 64, ... watched steps): "
                     + "; ".join(f"{c.model}: {statistics.median(c.detailed_in_block):g} of {c.steps_per_block} timed "
                                 "steps per block in detail" for c in counts) + ".")
    left = [c for c in cells if c.tool == tools[0] and c.pristine_cpu_ms and c.ratios]
    if left:
        lines.append("")
        lines.append(f"Plain code after the tools' sessions (median of {PLAIN_CHECK_BLOCKS} plain blocks after the last round "
                     "over as many before the first, CPU time: what a tool leaves in the process slows plain code "
                     "too, and the paired ratio cannot show it): "
                     + "; ".join(f"{c.model} x{c.after_cpu_ms / c.pristine_cpu_ms:.3f} ({c.pristine_cpu_ms:.3f} -> "
                                 f"{c.after_cpu_ms:.3f} ms)" for c in left) + ".")
    lines.append("")
    lines.append("Models: " + "; ".join(f"{m}: {ALL_WORKLOADS[m].description}" for m in models)
                 + ". Adam (where the loop has an optimizer and says no other), PyTorch's default implementation "
                 "for the device.")
    errs = [c for c in cells if c.error]
    for c in errs:
        lines.append(f"- {c.model} / {TOOL_LABELS[c.tool]}: {c.error}")
    lines.append("")
    if startup is not None:
        lines += [
            f"Start-up: `python` {startup.python_s:.3f} s, `memprof run` {startup.memprof_s:.3f} s, "
            f"**{startup.over_s:+.3f} s** (median of {startup.runs} paired runs of a 3-step script that imports torch).",
            "",
        ]
    if report is not None:
        lines += [
            f"Report: after {report.steps} steps of the tiny MLP under the default mode ({report.detailed_steps} "
            f"in detail), building the report took **{report.build_s:.3f} s** and its JSON "
            f"({report.json_bytes / 1e6:.1f} MB) {report.json_s:.3f} s.",
            "",
        ]
    rows = budget_rows(cells, startup, report, basis)
    if rows:
        lines += [f"Budgets (step-time verdicts on {'CPU' if basis == 'cpu' else 'wall-clock'} time):", "",
                  "| budget | limit | measured | met |", "| --- | --- | --- | --- |"]
        met = {True: "yes", False: "**no**", None: f"n/a (fewer than {REPORT_STEPS} steps)"}
        lines += [f"| {r['what']} | {r['budget']} | {r['measured']} | {met[r['met']]} |" for r in rows]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smoke run: one round, short blocks, few steps")
    ap.add_argument("--models", default=",".join(WORKLOADS),
                    help="comma-separated: " + ", ".join(WORKLOADS) + "; on request: " + ", ".join(LOOPS))
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated: " + ", ".join(TOOLS + EXTRA_TOOLS))
    ap.add_argument("--rounds", type=int, default=7, help="paired rounds per model and tool (default 7)")
    ap.add_argument("--block-seconds", type=float, default=1.0, help="length of each plain block (default 1.0)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: steadier figures on a shared machine; 0 keeps torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--basis", choices=["cpu", "wall"], default=None,
                    help="time the budget verdicts use (default: cpu on the CPU, where other processes share the "
                         "cores; wall on a GPU)")
    ap.add_argument("--startup-runs", type=int, default=7)
    ap.add_argument("--report-steps", type=int, default=REPORT_STEPS)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: steps, startup, report")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for overhead-<date>.md and .json")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.block_seconds, a.startup_runs = 1, 0.05, 1
        a.report_steps = min(a.report_steps, 300)
        if "--models" not in (argv if argv is not None else sys.argv[1:]):
            a.models = "tiny_mlp"
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    skip = {s for s in a.skip.split(",") if s}
    models = [m for m in a.models.split(",") if m]
    tools = [t for t in a.tools.split(",") if t]
    for m in models:
        if m not in ALL_WORKLOADS:
            ap.error(f"unknown model {m!r}")
    for t in tools:
        if t not in TOOLS + EXTRA_TOOLS:
            ap.error(f"unknown tool {t!r}")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    info = machine()
    if any(t.startswith("memprof") for t in tools):
        info["memprof_feed"] = op_hook_feed(log)
    log(f"machine: {info}")
    cells: list[Cell] = []
    if "steps" not in skip:
        for m in models:
            log(f"{m}:")
            cells += measure_model(m, tools, a.rounds, a.block_seconds, a.device, log)
    startup = None
    if "startup" not in skip:
        try:
            startup = measure_startup(a.startup_runs, log, warm=not a.quick)
        except Exception as e:
            log(f"start-up not measured: {e}")
    report = None
    if "report" not in skip:
        report = measure_report(a.report_steps, log)
    shown = list(argv if argv is not None else sys.argv[1:])
    basis = a.basis or ("cpu" if a.device == "cpu" else "wall")
    text = render(cells, startup, report, info, shown, a.rounds, a.block_seconds, basis)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"overhead-{dt.date.today().isoformat()}" + ("-quick" if a.quick else "")
    (out / f"{stem}.md").write_text(text + "\n")
    data = {
        "command": ["python", "benchmarks/overhead.py", *shown], "machine": info, "rounds": a.rounds,
        "block_seconds": a.block_seconds, "cells": [asdict(c) for c in cells],
        "startup": asdict(startup) if startup else None, "report": asdict(report) if report else None,
        "budgets": budget_rows(cells, startup, report, basis), "basis": basis,
    }
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    log(f"written: {out / (stem + '.md')}, {out / (stem + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

