"""The shapes a command takes (its class docstring is its help), and the output options that
``memprof run`` and ``memprof report`` both take from :data:`memprof.report.outputs.REPORTERS`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from memprof.report.outputs import REPORTERS


class _Named(Protocol):
    @property
    def name(self) -> str: ...

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None: ...


class Command(_Named, Protocol):
    """A command whose whole argv argparse parses."""

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int: ...


@runtime_checkable
class ArgvCommand(_Named, Protocol):
    """A command that takes its argv raw, e.g. ``memprof run``: what follows the script belongs
    to the script and must never reach argparse. Its parser still gives ``--help`` and parses the
    options the command finds before the script."""

    def run_from_argv(self, argv: list[str], parser: argparse.ArgumentParser) -> int: ...


def output_flags() -> set[str]:
    """The output options, which take a value: ``memprof run`` must know them to find the script."""
    return {r.option.flag for r in REPORTERS}


def add_output_options(parser: argparse.ArgumentParser, notes: Mapping[str, str] | None = None) -> None:
    """One option per reporter (``--json PATH``, ``--html PATH``); ``notes`` appends a command's
    own words to a reporter's help, by reporter name."""
    for r in REPORTERS:
        note = (notes or {}).get(r.name)
        parser.add_argument(r.option.flag, dest=r.name, metavar=r.option.metavar,
                            help=f"{r.option.help} {note}" if note else r.option.help)


def output_paths(args: argparse.Namespace) -> dict[str, str | None]:
    """The PATH given to each output option (None where it was not given)."""
    return {r.name: getattr(args, r.name) for r in REPORTERS}
