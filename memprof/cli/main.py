"""Entry point of the ``memprof`` command. Errors are caught once, here."""

from __future__ import annotations

import argparse
import inspect
import sys

from memprof.cli.base import ArgvCommand, Command
from memprof.cli.monitor import MonitorCommand
from memprof.cli.report_cmd import ReportCommand
from memprof.cli.run import RunCommand
from memprof.errors import MemprofError

AnyCommand = Command | ArgvCommand


def _commands() -> list[AnyCommand]:
    return [RunCommand(), ReportCommand(), MonitorCommand()]


class _Parser(argparse.ArgumentParser):
    """argparse that fails with one line and exit 2 (no usage dump, no traceback)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise MemprofError(f"{self.prog}: {message} (see '{self.prog} --help')")


def split_usage(doc: str) -> tuple[str | None, str]:
    """A command's docstring -> (its ``usage:`` paragraph without the prefix, the rest). argparse
    prints the usage line itself, so the description must not carry it a second time."""
    paragraphs = doc.split("\n\n")
    for i, para in enumerate(paragraphs):
        if para.startswith("usage: "):
            rest = "\n\n".join(paragraphs[:i] + paragraphs[i + 1:])
            return para[len("usage: "):], rest
    return None, doc


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, tuple[AnyCommand, argparse.ArgumentParser]]]:
    """The ``memprof`` parser, and each command with its own sub-parser."""
    from memprof import __version__

    parser = _Parser(
        prog="memprof",
        description="memprof: a GPU memory profiler and out-of-memory doctor for PyTorch.",
        epilog="Run 'memprof COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"memprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    registry: dict[str, tuple[AnyCommand, argparse.ArgumentParser]] = {}
    for cmd in _commands():
        usage, doc = split_usage(inspect.cleandoc(type(cmd).__doc__ or ""))
        summary = doc.splitlines()[0] if doc else ""
        p = sub.add_parser(
            cmd.name, help=summary, description=doc, usage=usage,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.prepare_parser(p)
        registry[cmd.name] = (cmd, p)
    return parser, registry


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser, registry = build_parser()
        if argv and argv[0] in registry:
            cmd, sub = registry[argv[0]]
            if isinstance(cmd, ArgvCommand):
                if len(argv) == 1 or argv[1] in ("-h", "--help"):
                    sub.print_help()
                    return 0 if len(argv) > 1 else 2
                return cmd.run_from_argv(argv[1:], sub)
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help(sys.stderr)
            return 2
        cmd = registry[args.command][0]
        assert not isinstance(cmd, ArgvCommand)  # dispatched above, before argparse
        return cmd.run(args, parser)
    except MemprofError as e:
        print(f"memprof: error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())
