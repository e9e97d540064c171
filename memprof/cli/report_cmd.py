"""``memprof report FILE``: show a saved report, or read a PyTorch memory snapshot."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from memprof.cli.base import add_output_options, output_paths
from memprof.errors import MemprofError
from memprof.model import Report
from memprof.report.json_io import load_report
from memprof.report.outputs import SUMMARY, write_files


def _kind(path: Path) -> str:
    """'json' or 'snapshot', judged by the file's content (never its extension)."""
    from memprof.report.snapshot import looks_like_pickle

    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except IsADirectoryError:
        raise MemprofError(f"{path} is a directory, not a report") from None
    except OSError as e:
        raise MemprofError(f"cannot read {path}: {e.strerror or e}") from None
    if looks_like_pickle(head):
        return "snapshot"
    text = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"{"):
        return "json"
    raise MemprofError(f"{path} is neither a memprof report JSON nor a PyTorch memory snapshot pickle")


def load_any(path: str | os.PathLike[str]) -> Report:
    """A Report from a memprof report JSON or a PyTorch CUDA memory snapshot pickle."""
    target = Path(path)
    if _kind(target) == "snapshot":
        from memprof.report.snapshot import report_from_snapshot

        return report_from_snapshot(target)
    try:
        return load_report(target)
    except (KeyError, ValueError, TypeError, AttributeError) as e:  # a report JSON with broken fields
        raise MemprofError(f"{target} is not a valid memprof report: {type(e).__name__}: {e}") from None


def _use_color(no_color: bool) -> bool:
    if no_color or os.environ.get("NO_COLOR"):
        return False
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _can_encode_unicode() -> bool:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "\u2588\u2591\u2192\u00b7\u2026".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class ReportCommand:
    """Show a saved report or a PyTorch memory snapshot; convert it to HTML or JSON.

    FILE is a report JSON written by 'memprof run --json', or a PyTorch CUDA memory snapshot
    pickle written by torch.cuda.memory._dump_snapshot() (recognised by its content, whatever
    its name). The summary is printed to stdout.

    examples:
      memprof report report.json
      memprof report report.json --html report.html
      memprof report snapshot.pickle --json snapshot-report.json --html snapshot.html
    """

    name = "report"

    def prepare_parser(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", metavar="FILE", help="a memprof report JSON or a PyTorch memory snapshot pickle")
        add_output_options(parser, notes={"json": "(converts a snapshot)"})
        parser.add_argument("--no-color", action="store_true", help="no ANSI colour in the summary")

    def run(self, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        report = load_any(args.file)
        written = write_files(report, output_paths(args))
        SUMMARY.write(report, sys.stdout, color=_use_color(args.no_color), unicode=_can_encode_unicode())
        for path in written:
            print(f"memprof: wrote {path}", file=sys.stderr)
        return 0
