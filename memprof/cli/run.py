"""``memprof run``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import ClassVar

from memprof.cli.base import add_output_options, output_flags, output_paths
from memprof.cli.distributed import run_distributed
from memprof.errors import MemprofError
from memprof.runner import Target, check_target
from memprof.units import parse_size

# memprof's own options that take a value, with output_flags(); everything from SCRIPT (or -m
# MODULE) on is the script's.
_VALUE_OPTIONS = {"--budget", "--memory-limit", "--nproc-per-node", "--detail", "--detail-steps", "--rank-dir"}


def split_argv(argv: list[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """``[options] SCRIPT args`` or ``[options] -m MODULE args`` -> (options, script, module, args)."""
    value_options = _VALUE_OPTIONS | output_flags()
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":
            i += 1
            break
        if tok == "-m":
            if i + 1 >= len(argv):
                raise MemprofError("run: -m needs a module name")
            return argv[:i], None, argv[i + 1], argv[i + 2:]
        if tok.startswith("-m") and len(tok) > 2 and not tok.startswith("--"):
            return argv[:i], None, tok[2:], argv[i + 1:]
        if not tok.startswith("-") or tok == "-":
            break
        if tok in value_options:
            i += 2
            continue
        i += 1
    if i >= len(argv):
        return argv, None, None, []
    return argv[:i], argv[i], None, argv[i + 1:]


def size_option(flag: str) -> Callable[[str], int]:
    """The ``type`` of a size option: :func:`parse_size`, its errors naming the option."""

    def parse(text: str) -> int:
        try:
            return parse_size(text)
        except MemprofError as e:
            raise MemprofError(f"run: {flag}: {e.message}") from None

    return parse


def join_values(options: list[str]) -> list[str]:
    """``--budget -5GiB`` -> ``--budget=-5GiB``: argparse takes a value that starts with '-' for an
    option (and says "expected one argument"); joined, the value reaches its parser, which can say
    what is wrong with it."""
    value_options = _VALUE_OPTIONS | output_flags()
    out: list[str] = []
    i = 0
    while i < len(options):
        tok = options[i]
        if tok in value_options and i + 1 < len(options):
            out.append(f"{tok}={options[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


class RunCommand:
    """Run a Python script (or -m module) under memprof, exactly as python would.

    usage: memprof run [OPTIONS] SCRIPT [ARGS...]
           memprof run [OPTIONS] -m MODULE [ARGS...]

    The script runs as __main__ with its own arguments, its folder first on sys.path, and its
    stdout and stderr untouched; memprof exits with the script's exit status. At the end memprof
    prints a summary to stderr: the peak, what it was made of, the largest modules, what is
    wrong (file:line, variable, the fix) and what to change (each with its predicted peak).

    examples:
      memprof run train.py --epochs 3
      memprof run --json report.json --html report.html train.py
      memprof run --budget 24GiB train.py           # advice for a 24 GiB card
      memprof run --memory-limit 4GiB train.py      # rehearse an out-of-memory on a 4 GiB card
      memprof run --tui train.py                    # watch it live
    """

    name: ClassVar[str] = "run"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.allow_abbrev = False  # split_argv must know each option that takes a value: no --bud
        add_output_options(parser)
        parser.add_argument("--budget", metavar="SIZE", type=size_option("--budget"),
                            help="the memory to plan for, with its unit: 8GiB, 512MiB, 1.5GB "
                                 "(default: the CUDA device's usable memory; none on CPU)")
        parser.add_argument("--memory-limit", metavar="SIZE", type=size_option("--memory-limit"),
                            help="run as if the device had only SIZE: allocations past it raise "
                                 "torch.OutOfMemoryError, so an out-of-memory can be rehearsed anywhere")
        parser.add_argument("--tui", action="store_true", help="watch the run live in a terminal UI")
        parser.add_argument("--nproc-per-node", metavar="N", type=int,
                            help="launch N processes with torchrun and merge their reports")
        parser.add_argument("--detail", choices=["auto", "full"], default="auto",
                            help="auto (default): detail for the first steps and when memory changes, "
                                 "cheap watching otherwise; full: detail on every step (slower)")
        parser.add_argument("--detail-steps", metavar="N", type=int, default=10,
                            help="steps profiled in full detail at the start (default 10)")
        parser.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
        parser.add_argument("--rank-dir", help=argparse.SUPPRESS)  # set by --nproc-per-node for each rank
        parser.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
        parser.add_argument("target", nargs=argparse.REMAINDER, metavar="SCRIPT [ARGS...]",
                            help="the script and its arguments")

    def run_from_argv(self, argv: list[str], parser: argparse.ArgumentParser) -> int:
        options, script, module, script_args = split_argv(argv)
        ns = parser.parse_args(join_values(options))
        for name, path in output_paths(ns).items():  # the folder memprof started in, whatever the
            if path:  # script's os.chdir; the same path is named on stderr
                setattr(ns, name, os.path.abspath(path))
        if ns.module:  # '-m' inside the options block (e.g. after other options)
            module = ns.module
        if script is None and module is None:
            raise MemprofError("run: missing SCRIPT (usage: memprof run [OPTIONS] SCRIPT [ARGS...])")
        if ns.detail_steps is not None and ns.detail_steps < 0:
            raise MemprofError("run: --detail-steps must be 0 or more")
        target = Target(path=script, module=module)
        check_target(target)
        if ns.tui:
            return self._run_with_tui(argv)
        if ns.nproc_per_node:
            return run_distributed(ns, target, script_args)
        from memprof.cli.local import run_local  # torch and the session: only once a script runs

        return run_local(ns, target, script_args)

    @staticmethod
    def _run_with_tui(argv: list[str]) -> int:
        from memprof.tui.launch import run_with_tui

        # Only memprof's own --tui goes: the script may have a --tui of its own.
        options, script, module, script_args = split_argv(argv)
        child = [a for a in options if a != "--tui"]
        child += ["-m", module] if module is not None else [script or ""]
        return run_with_tui([sys.executable, "-m", "memprof", "run", *child, *script_args], dict(os.environ))
