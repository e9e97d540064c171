"""A long run under ``memprof run``: report size, memprof's extra memory, and SIGTERM to exit.

    python benchmarks/long_run.py                      # 1,000,000 steps (10-20 min on a shared 2-core machine)
    python benchmarks/long_run.py --steps 100000       # shorter
    python benchmarks/long_run.py --quick              # a smoke run (20,000 steps, under a minute)

The script is a tiny model (``nn.Linear(4, 1)`` on a (1, 4) tensor, SGD), so that memprof's share
of each step is as large as it gets. Three runs of the same script, one after the other:

1. ``python tiny.py STEPS``: plain python, its peak resident set size (``ru_maxrss``) and wall time;
2. ``memprof run --json R tiny.py STEPS``: to its end; the report's size and kept steps, the peak
   resident set size (the report's writing included), wall time;
3. ``memprof run --json R tiny.py BIG STEPS``: the script prints a line after STEPS steps and goes
   on; SIGTERM is sent when the line is read, and the time to the process's exit is measured; the
   report must be written, with status ``interrupted``.

Also a SIGTERM run at a tenth of the steps, to show that the stop time does not grow with them.
Targets: report under 2 MB, extra RSS under 100 MiB, SIGTERM to exit under 2 s. The results go
to ``benchmarks/results/long-run-<date>.{md,json}`` (``--out``, ``--tag``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 1 << 20
TARGETS = {"report_bytes": 2_000_000, "extra_rss_bytes": 100 * MiB, "sigterm_seconds": 2.0}

SCRIPT = '''\
import sys
import torch

steps = int(sys.argv[1])
ready_at = int(sys.argv[2]) if len(sys.argv) > 2 else -1
torch.manual_seed(0)
model = torch.nn.Linear(4, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.ones(1, 4)
for i in range(steps):
    opt.zero_grad()
    loss = model(x).sum()
    loss.backward()
    opt.step()
    if i == ready_at:
        print("READY", flush=True)
'''


def _memprof() -> list[str]:
    return [sys.executable, "-m", "memprof", "run"]


def _wait(proc: subprocess.Popen[str]) -> tuple[int, int]:
    """(exit status, peak RSS in bytes) of a child."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024


def run_to_end(cmd: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    code, rss = _wait(proc)
    return {"exit": code, "rss_bytes": rss, "seconds": round(time.perf_counter() - t0, 2), "stderr_tail": err[-600:]}


def run_and_terminate(cmd: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stdout:
        if "READY" in line:
            break
    ready = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    code, rss = _wait(proc)
    stop = time.perf_counter() - ready
    err = proc.stderr.read()
    return {"exit": code, "rss_bytes": rss, "sigterm_seconds": round(stop, 3),
            "seconds": round(ready - t0, 2), "stderr_tail": err[-600:]}


def _report(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"written": False}
    d = json.loads(path.read_text())
    return {"written": True, "bytes": path.stat().st_size, "status": d.get("status"), "steps_in_json": len(d["steps"]),
            "steps_kept": d.get("steps_kept"), "peak_bytes": d.get("peak_bytes")}


def measure(steps: int, tmp: Path) -> dict[str, Any]:
    script = tmp / "tiny.py"
    script.write_text(SCRIPT)
    out: dict[str, Any] = {"steps": steps}
    print(f"plain python, {steps:,} steps ...", flush=True)
    out["plain"] = run_to_end([sys.executable, str(script), str(steps)])
    print(f"  {out['plain']['seconds']} s; memprof run to the end ...", flush=True)
    full = tmp / "full.json"
    out["memprof"] = run_to_end([*_memprof(), "--json", str(full), str(script), str(steps)])
    out["memprof"]["report"] = _report(full)
    out["extra_rss_bytes"] = out["memprof"]["rss_bytes"] - out["plain"]["rss_bytes"]
    for n in (max(1, steps // 10), steps):
        print(f"  {out['memprof']['seconds']} s; memprof run, SIGTERM after {n:,} steps ...", flush=True)
        term = tmp / f"term-{n}.json"
        r = run_and_terminate([*_memprof(), "--json", str(term), str(script), str(10 * steps + 10), str(n - 1)])
        r["report"] = _report(term)
        r["extra_rss_bytes"] = r["rss_bytes"] - out["plain"]["rss_bytes"]
        out[f"sigterm_after_{n}"] = r
    return out


def verdicts(res: dict[str, Any]) -> dict[str, bool]:
    term = res[f"sigterm_after_{res['steps']}"]
    return {
        "report_bytes": res["memprof"]["report"].get("bytes", 1 << 62) < TARGETS["report_bytes"],
        "extra_rss_bytes": max(res["extra_rss_bytes"], term["extra_rss_bytes"]) < TARGETS["extra_rss_bytes"],
        "sigterm_seconds": term["sigterm_seconds"] < TARGETS["sigterm_seconds"]
        and term["report"].get("status") == "interrupted",
    }


def markdown(res: dict[str, Any], ok: dict[str, bool]) -> str:
    n = res["steps"]
    small = max(1, n // 10)
    mem, plain = res["memprof"], res["plain"]
    lines = [
        f"# A long run under memprof run ({dt.date.today().isoformat()})", "",
        f"`python benchmarks/long_run.py --steps {n}` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}): a tiny model (`nn.Linear(4, 1)` on a "
        "(1, 4) tensor, SGD), memprof's default mode.", "",
        "| run | steps | wall | peak RSS | extra RSS | report | steps in the JSON | SIGTERM to exit | status |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        f"| plain python | {n:,} | {plain['seconds']} s | {plain['rss_bytes'] / MiB:.1f} MiB | | | | | exit {plain['exit']} |",
        f"| memprof run, to the end | {n:,} | {mem['seconds']} s | {mem['rss_bytes'] / MiB:.1f} MiB | "
        f"{res['extra_rss_bytes'] / MiB:+.1f} MiB | {mem['report'].get('bytes', 0) / 1e6:.3f} MB | "
        f"{mem['report'].get('steps_in_json', 0):,} | | {mem['report'].get('status')} |",
    ]
    for k in (small, n):
        t = res[f"sigterm_after_{k}"]
        rep = t["report"]
        lines.append(
            f"| memprof run, SIGTERM | {k:,} | {t['seconds']} s | {t['rss_bytes'] / MiB:.1f} MiB | "
            f"{t['extra_rss_bytes'] / MiB:+.1f} MiB | {rep.get('bytes', 0) / 1e6:.3f} MB | "
            f"{rep.get('steps_in_json', 0):,} | {t['sigterm_seconds']:.3f} s | {rep.get('status')} (exit {t['exit']}) |")
    lines += ["", "| target | limit | met |", "| --- | --- | --- |",
              f"| report size | < 2 MB | {'yes' if ok['report_bytes'] else 'NO'} |",
              f"| memprof's extra RSS | < 100 MiB | {'yes' if ok['extra_rss_bytes'] else 'NO'} |",
              f"| SIGTERM to exit, report written (interrupted) | < 2 s | {'yes' if ok['sigterm_seconds'] else 'NO'} |",
              "", "Peak RSS is the process's `ru_maxrss` (the report's writing included); the extra RSS is "
              "memprof's over the same script under plain python (memprof's own imports included). "
              "Wall times are for the whole command, on a machine shared with other work."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="20,000 steps, a smoke run")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--tag", default="", help="a suffix for the result files")
    a = ap.parse_args(argv)
    steps = 20_000 if a.quick else a.steps
    with tempfile.TemporaryDirectory(prefix="memprof-long-") as tmp:
        res = measure(steps, Path(tmp))
    ok = verdicts(res)
    res["targets"], res["met"] = TARGETS, ok
    res["machine"] = {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()}
    md = markdown(res, ok)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"long-run-{dt.date.today().isoformat()}{'-quick' if a.quick else ''}{a.tag}"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / f"{stem}.md").write_text(md)
    print(md)
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
