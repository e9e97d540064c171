"""The shape every command shares: the class docstring is its help."""

from __future__ import annotations

import argparse
from typing import Protocol


class Command(Protocol):
    @property
    def name(self) -> str: ...

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int: ...
