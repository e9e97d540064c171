"""The GPU check: one script, under 5 minutes, for a machine with a CUDA device.

    python benchmarks/gpu_check.py            # everything; the table goes to benchmarks/results/
    python benchmarks/gpu_check.py --quick    # a fast pass over the same code paths

Parts, each reported ok, fail or skipped (never a crash of the whole check):

- environment: torch, CUDA, the GPU.
- overhead: memprof's default and detailed modes against plain PyTorch on the GPU (the paired
  blocks of ``benchmarks/overhead.py``), a per-op bound tiny MLP and a CNN.
- peak: ``memprof run``'s peak against ``torch.cuda.max_memory_allocated`` and
  ``max_memory_reserved`` of the same script run plainly (default and ``--detail full``).
- cases: ``../shared/cases`` with ``--device cuda``: each expected finding at its line, no false alarm.
- oom: a real CUDA out-of-memory, with the allocator capped by ``--memory-limit`` (status ``oom``,
  the failing line, batch-size advice that fits), and one allocation past the whole device.

Without CUDA the CUDA parts say "skipped: no CUDA"; ``--device cpu`` runs them on the CPU instead
(peak then against ``../shared/tools/groundtruth.py``; the out-of-memory is the CPU rehearsal).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

TIME_BUDGET_S = 290.0


@dataclass
class Result:
    part: str
    status: str  # ok | fail | skipped
    detail: str
    seconds: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    device: str | None  # "cuda", "cpu" (forced), or None: no CUDA, CUDA parts skipped
    quick: bool
    tmp: Path
    shared: Path
    deadline: float
    log: Callable[[str], None]

    def left(self) -> float:
        return self.deadline - time.monotonic()


# -- helpers ------------------------------------------------------------------------------------------
def memprof_run(ctx: Context, *args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """``memprof run --json`` in a subprocess; the report, or None."""
    report = ctx.tmp / f"report-{time.monotonic_ns()}.json"
    env = dict(os.environ, MEMPROF_LIVE_DIR=str(ctx.tmp / "live"))
    env.pop("MEMPROF_LIVE_SOCKET", None)
    cmd = [sys.executable, "-m", "memprof", "run", "-q", "--json", str(report), *args]
    proc = subprocess.run(cmd, cwd=ctx.tmp, env=env, capture_output=True, text=True, timeout=min(timeout, max(ctx.left(), 5)))
    data = json.loads(report.read_text()) if report.exists() else None
    return proc, data


def python_run(ctx: Context, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ctx.tmp, env=dict(os.environ, **(env or {})),
                          capture_output=True, text=True, timeout=min(timeout, max(ctx.left(), 5)))


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def needs_device(fn: Callable[[Context], list[Result]]) -> Callable[[Context], list[Result]]:
    def wrapped(ctx: Context) -> list[Result]:
        if ctx.device is None:
            return [Result(fn.__name__.removeprefix("part_"), "skipped", "skipped: no CUDA")]
        return fn(ctx)

    wrapped.__name__ = fn.__name__
    return wrapped


# -- parts ----------------------------------------------------------------------------------------------
def part_environment(ctx: Context) -> list[Result]:
    info = f"torch {torch.__version__}, Python {platform.python_version()}"
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info += (f", CUDA {torch.version.cuda}, {p.name} ({p.total_memory / 2**30:.1f} GiB), "
                 f"{torch.cuda.device_count()} device(s)")
    else:
        info += ", no CUDA" + (" (CUDA parts run on the CPU: --device cpu)" if ctx.device == "cpu" else "")
    return [Result("environment", "ok", info)]


@needs_device
def part_overhead(ctx: Context) -> list[Result]:
    from benchmarks.overhead import measure_model

    out = []
    rounds, block = (1, 0.1) if ctx.quick else (3, 0.5)
    if ctx.device == "cpu":
        torch.set_num_threads(1)  # as benchmarks/overhead.py does: steadier on a shared machine
    for model in ("tiny_mlp", "cnn"):
        if ctx.left() < 60:
            out.append(Result(f"overhead {model}", "skipped", "skipped: time budget"))
            continue
        cells = measure_model(model, ["memprof", "memprof_full"], rounds, block, ctx.device or "cpu",
                              lambda m: ctx.log(m))
        parts = []
        failed = False
        for c in cells:
            if c.error and not c.ratios:
                failed = True
                parts.append(f"{c.tool}: failed ({c.error})")
            else:
                parts.append(f"{c.tool} {c.tool_ms:.3f} ms x{c.ratio:.2f}")
        plain = cells[0].plain_ms if cells else 0.0
        out.append(Result(f"overhead {model} ({ctx.device})", "fail" if failed else "ok",
                          f"plain {plain:.3f} ms/step; " + "; ".join(parts),
                          data={"cells": [c.__dict__ for c in cells]}))
    return out


PEAK_SCRIPT = """\
import json, os, sys
import torch
from torch import nn

dev, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
).to(dev)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step in range(steps):
    x = torch.randn(batch, 3, 64, 64, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    opt.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
if dev == "cuda":
    torch.cuda.synchronize()
    with open(os.environ["PEAK_OUT"], "w") as fh:
        json.dump({"max_allocated": torch.cuda.max_memory_allocated(),
                   "max_reserved": torch.cuda.max_memory_reserved()}, fh)
"""


@needs_device
def part_peak(ctx: Context) -> list[Result]:
    script = ctx.tmp / "peak_probe.py"
    script.write_text(PEAK_SCRIPT)
    steps, batch = ("6", "32") if ctx.quick else ("14", "64")
    args = [str(script), ctx.device or "cpu", steps, batch]
    if ctx.device == "cuda":
        out = ctx.tmp / "peak.json"
        proc = python_run(ctx, *args, env={"PEAK_OUT": str(out)})
        if proc.returncode != 0:
            return [Result("peak", "fail", f"plain run exited {proc.returncode}: {proc.stderr[-300:]}")]
        truth = json.loads(out.read_text())
        what = "torch.cuda.max_memory_allocated"
    else:
        gt = ctx.shared / "tools" / "groundtruth.py"
        if not gt.exists():
            return [Result("peak", "skipped", f"skipped: no {gt}")]
        out = ctx.tmp / "gt.json"
        proc = python_run(ctx, str(gt), *args, env={"GROUNDTRUTH_OUT": str(out)})
        if proc.returncode != 0:
            return [Result("peak", "fail", f"groundtruth exited {proc.returncode}: {proc.stderr[-300:]}")]
        truth = {"max_allocated": json.loads(out.read_text())["peak_bytes"], "max_reserved": None}
        what = "groundtruth.py"
    results = []
    for mode in ("auto", "full"):
        proc, report = memprof_run(ctx, "--detail", mode, *args)
        if report is None or proc.returncode != 0:
            results.append(Result(f"peak ({mode})", "fail", f"memprof run exited {proc.returncode}: {proc.stderr[-300:]}"))
            continue
        peak = int(report["peak_bytes"])
        err = (peak - truth["max_allocated"]) / max(truth["max_allocated"], 1)
        detail = f"memprof {peak} vs {what} {truth['max_allocated']} ({err:+.2%})"
        ok = abs(err) <= 0.01
        cuda = report.get("cuda") or {}
        if truth.get("max_reserved"):
            reserved = max(int(cuda.get("reserved_peak_bytes", 0)), int(cuda.get("reserved_bytes", 0)))
            rerr = (reserved - truth["max_reserved"]) / max(truth["max_reserved"], 1)
            detail += f"; reserved {mib(reserved)} vs max_memory_reserved {mib(truth['max_reserved'])} ({rerr:+.1%})"
            ok = ok and abs(rerr) <= 0.05
        results.append(Result(f"peak ({mode}, {ctx.device})", "ok" if ok else "fail", detail,
                              data={"peak": peak, "truth": truth, "cuda": cuda}))
    return results


def _lines_of(source: list[str], needles: list[str]) -> set[int]:
    return {i + 1 for i, text in enumerate(source) for n in needles if n in text}


@needs_device
def part_cases(ctx: Context) -> list[Result]:
    cases_dir = ctx.shared / "cases"
    manifest_path = cases_dir / "expected.json"
    if not manifest_path.exists():
        return [Result("cases", "skipped", f"skipped: no {manifest_path}")]
    manifest = json.loads(manifest_path.read_text())
    cases = manifest["cases"][:2] if ctx.quick else manifest["cases"]
    tp = fn = fp = 0
    problems: list[str] = []
    ran = 0
    for case in cases:
        if ctx.left() < 20:
            problems.append(f"{case['script']}: not run (time budget)")
            fn += len(case["expect"])
            continue
        script = cases_dir / case["script"]
        proc, report = memprof_run(ctx, str(script), *case["args"], "--device", ctx.device or "cpu")
        ran += 1
        if report is None:
            problems.append(f"{case['script']}: no report (exit {proc.returncode}) {proc.stderr.strip()[-200:]}")
            fn += len(case["expect"])
            continue
        src = script.read_text().splitlines()
        findings = [f for f in report.get("findings", []) if f.get("severity") in ("warning", "error")]
        used: set[int] = set()
        for exp in case["expect"]:
            lines = _lines_of(src, exp["at"])
            match = next((i for i, f in enumerate(findings) if i not in used and f.get("kind") in exp["kind"]
                          and Path(str(f.get("file", ""))).name == script.name and f.get("line") in lines), None)
            if match is None:
                fn += 1
                problems.append(f"{case['script']}: missed {exp['kind']} at {sorted(lines)}")
            else:
                tp += 1
                used.add(match)
        allowed = set(case.get("allow", [])) | {k for e in case["expect"] for k in e["kind"]}
        for i, f in enumerate(findings):
            if i not in used and f.get("kind") not in allowed:
                fp += 1
                problems.append(f"{case['script']}: false alarm {f.get('kind')} at line {f.get('line')}")
        if ctx.device == "cuda" and report.get("device", {}).get("type") != "cuda":
            problems.append(f"{case['script']}: report device is {report.get('device')}, not cuda")
            fp += 1
    expected = sum(len(c["expect"]) for c in cases)
    recall = tp / expected if expected else 1.0
    precision = tp / (tp + fp) if tp + fp else 1.0
    detail = f"{ran} case(s) with --device {ctx.device}: recall {tp}/{expected} = {recall:.2f}, precision {precision:.2f}"
    if problems:
        detail += "; " + "; ".join(problems[:6])
    return [Result(f"cases ({ctx.device})", "ok" if fn == 0 and fp == 0 else "fail", detail)]


OOM_SCRIPT = """\
import sys
import torch
from torch import nn

dev, width, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
model = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(width, width), nn.ReLU())]).to(dev)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(3):
    x = torch.randn(batch, width, device=dev)
    opt.zero_grad()
    out = model(x)  # the out-of-memory
    out.float().pow(2).mean().backward()
    opt.step()
"""

PAST_DEVICE_SCRIPT = """\
import torch

x = torch.randn(1024, 1024, device="cuda")
free, total = torch.cuda.mem_get_info()
too_big = torch.empty(2 * total, dtype=torch.uint8, device="cuda")  # the out-of-memory
"""


def _check_oom(report: dict[str, Any] | None, proc: subprocess.CompletedProcess[str], script: Path,
               marker: str, want_batch: int | None) -> tuple[bool, str]:
    if report is None:
        return False, f"no report (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
    line = next(i for i, text in enumerate(script.read_text().splitlines(), 1) if marker in text)
    ooms = [f for f in report.get("findings", []) if f.get("kind") == "oom"]
    got_line = ooms[0].get("line") if ooms else None
    problems = []
    if proc.returncode != 1:
        problems.append(f"exit {proc.returncode}, not 1")
    if report.get("status") != "oom":
        problems.append(f"status {report.get('status')!r}")
    if got_line != line or (ooms and Path(str(ooms[0].get("file"))).name != script.name):
        problems.append(f"oom finding at {ooms[0].get('file') if ooms else None}:{got_line}, expected line {line}")
    detail = f"status {report.get('status')}, exit {proc.returncode}, oom at line {got_line} (expected {line})"
    if want_batch is not None:
        recs = [r for r in report.get("recommendations", []) if r.get("kind") == "batch_size"]
        if not recs:
            problems.append("no batch_size advice")
        else:
            r = recs[0]
            detail += (f", advice: batch {r.get('current')} -> {r.get('suggested')} "
                       f"(predicted {mib(r.get('predicted_peak_bytes') or 0)})")
            if not (0 < int(r.get("suggested") or 0) < want_batch):
                problems.append(f"suggested batch {r.get('suggested')} not below {want_batch}")
    return not problems, detail + ("; " + "; ".join(problems) if problems else "")


def part_oom(ctx: Context) -> list[Result]:
    script = ctx.tmp / "oom_probe.py"
    script.write_text(OOM_SCRIPT)
    results = []
    if ctx.device == "cuda":
        width, batch, limit = "2048", "8192", "320MiB"
        label = "oom (CUDA, allocator capped by --memory-limit)"
    else:
        width, batch, limit = "1024", "4096", "80MiB"
        label = "oom (CPU rehearsal, --memory-limit)"
    proc, report = memprof_run(ctx, "--memory-limit", limit, str(script), ctx.device or "cpu", width, batch)
    ok, detail = _check_oom(report, proc, script, "# the out-of-memory", int(batch))
    results.append(Result(label, "ok" if ok else "fail", f"--memory-limit {limit}: {detail}"))
    if ctx.device == "cuda":
        past = ctx.tmp / "oom_past_device.py"
        past.write_text(PAST_DEVICE_SCRIPT)
        proc, report = memprof_run(ctx, str(past))
        ok, detail = _check_oom(report, proc, past, "# the out-of-memory", None)
        results.append(Result("oom (CUDA, one allocation past the device)", "ok" if ok else "fail", detail))
    elif ctx.device is None:
        results.append(Result("oom (CUDA, past the device)", "skipped", "skipped: no CUDA"))
    return results


PARTS: list[tuple[str, Callable[[Context], list[Result]]]] = [
    ("environment", part_environment),
    ("overhead", part_overhead),
    ("peak", part_peak),
    ("cases", part_cases),
    ("oom", part_oom),
]


def render(results: list[Result], info: dict[str, str], argv: list[str], total: float) -> str:
    lines = [
        f"# memprof GPU check, {info['date']}, {info['gpu']}",
        "",
        "Command: `" + " ".join(["python benchmarks/gpu_check.py", *argv]) + "`",
        "",
        f"Machine: {info['machine']}. Total {total:.0f} s.",
        "",
        "| part | status | detail | s |",
        "| --- | --- | --- | --- |",
    ]
    for r in results:
        detail = r.detail.replace("|", "/").replace("\n", " ")
        lines.append(f"| {r.part} | {r.status} | {detail} | {r.seconds:.1f} |")
    counts = {s: sum(1 for r in results if r.status == s) for s in ("ok", "fail", "skipped")}
    lines += ["", f"{counts['ok']} ok, {counts['fail']} failed, {counts['skipped']} skipped.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a fast pass: fewer rounds, two cases")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="where the CUDA parts run (default: cuda when available, else they are skipped)")
    ap.add_argument("--parts", default=",".join(p for p, _ in PARTS), help="comma-separated subset of the parts")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"), help="the shared/ folder (cases, tools)")
    ap.add_argument("--out", default=str(HERE / "results"), help="folder for gpu-check-<date>-<gpu>.md and .json")
    a = ap.parse_args(argv)
    shown = list(argv if argv is not None else sys.argv[1:])
    device = a.device or ("cuda" if torch.cuda.is_available() else None)
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but no CUDA: the CUDA parts are skipped", file=sys.stderr)
        device = None
    wanted = {p for p in a.parts.split(",") if p}
    t0 = time.monotonic()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="memprof-gpu-check-") as tmp:
        ctx = Context(device=device, quick=a.quick, tmp=Path(tmp), shared=Path(a.shared),
                      deadline=t0 + TIME_BUDGET_S, log=log)
        for name, fn in PARTS:
            if name not in wanted:
                continue
            start = time.monotonic()
            log(f"gpu_check: {name}...")
            try:
                if ctx.left() <= 0:
                    rs = [Result(name, "skipped", "skipped: time budget")]
                else:
                    rs = fn(ctx)
            except Exception as e:  # one part failing must not stop the others
                rs = [Result(name, "fail", f"{type(e).__name__}: {e}"[:400])]
                if os.environ.get("MEMPROF_DEBUG"):
                    traceback.print_exc()
            ran = [r for r in rs if r.status != "skipped"] or rs
            for r in rs:
                r.seconds = r.seconds or ((time.monotonic() - start) / len(ran) if r in ran else 0.0)
                log(f"  {r.part}: {r.status}: {r.detail}")
            results += rs
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no-cuda"
    info = {"date": dt.date.today().isoformat(), "gpu": gpu,
            "machine": f"{platform.platform()}, Python {platform.python_version()}, torch {torch.__version__}"}
    total = time.monotonic() - t0
    text = render(results, info, shown, total)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower()
    stem = f"gpu-check-{info['date']}-{slug}" + ("-quick" if a.quick else "")
    (out / f"{stem}.md").write_text(text + "\n")
    (out / f"{stem}.json").write_text(json.dumps(
        {"info": info, "command": shown, "seconds": total,
         "results": [{"part": r.part, "status": r.status, "detail": r.detail, "seconds": r.seconds, "data": r.data}
                     for r in results]}, indent=1, default=str) + "\n")
    log(f"written: {out / (stem + '.md')}")
    return 1 if any(r.status == "fail" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
