"""``memprof monitor``."""

from __future__ import annotations

import argparse
import sys
from typing import ClassVar

from memprof.errors import MemprofError


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MemprofError(f"monitor: --interval must be a number of seconds, not {text!r}") from None
    if not 0.1 <= value <= 3600:
        raise MemprofError("monitor: --interval must be between 0.1 and 3600 seconds")
    return value


class MonitorCommand:
    """Watch the GPUs of this machine and every memprof run on it, live.

    usage: memprof monitor [--once] [--interval SECONDS] [--gpu-backend auto|nvml|gputil|none]

    Shows each GPU (memory used/total, utilisation, the processes on it, through NVML, or GPUtil
    where only nvidia-smi works) and every run profiled by memprof on this machine for this user
    (its script, step, batch size, memory and findings), found through their live channels in
    $MEMPROF_LIVE_DIR, else $XDG_RUNTIME_DIR/memprof, else /tmp/memprof-<uid>. Enter opens a run's
    live view. Without a GPU it says so and still lists the runs. Closing the monitor (q) does not
    affect any run.

    examples:
      memprof monitor                # the live view; q quits
      memprof monitor --once         # one plain-text table, for scripts and logs
      memprof monitor --interval 5
    """

    name: ClassVar[str] = "monitor"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--once", action="store_true",
                            help="print one plain-text table of the GPUs and runs and exit "
                                 "(also what happens when the output is not a terminal)")
        parser.add_argument("--interval", metavar="SECONDS", type=_interval, default=1.0,
                            help="seconds between refreshes (default 1)")
        parser.add_argument("--gpu-backend", choices=["auto", "nvml", "gputil", "none"], default="auto",
                            help="how to read the GPUs (default auto: NVML, else GPUtil, else none)")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        from memprof.hw.gpu import get_backend
        from memprof.live.client import discover
        from memprof.live.paths import live_dir

        backend = get_backend(args.gpu_backend)
        directory = str(live_dir())
        try:
            if args.once or not (sys.stdout.isatty() and sys.stdin.isatty()):
                from memprof.tui.format import plain_report

                runs = [r.state for r in discover()]
                print(plain_report(backend.snapshot(), runs, directory))
                return 0
            from memprof.tui.feed import DirectoryRuns
            from memprof.tui.monitor_app import MonitorApp

            MonitorApp(backend, DirectoryRuns(), interval=args.interval, live_directory=directory).run()
            return 0
        finally:
            backend.close()
