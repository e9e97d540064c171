"""The output options of ``memprof run`` and ``memprof report`` come from the registry: one option
per reporter, and a reporter added to the registry is an option of both at once."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from memprof.cli import main as cli_main
from memprof.cli.base import ArgvCommand
from memprof.cli.run import split_argv
from memprof.model import Report
from memprof.report.outputs import REPORTERS, Option
from tests.report_factory import make_report


class Steps:
    """A format as a new one would be added: one class and its line in the registry."""

    name: ClassVar[str] = "steps"
    label: ClassVar[str] = "steps table"
    option: ClassVar[Option] = Option("--steps", "write one line per step to PATH")
    best_effort: ClassVar[bool] = True

    def write(self, report: Report, path: str) -> None:
        Path(path).write_text("".join(f"{s.index},{s.peak_bytes}\n" for s in report.steps))


@pytest.fixture
def steps_reporter() -> Iterator[Steps]:
    reporter = Steps()
    REPORTERS.append(reporter)
    yield reporter
    REPORTERS.remove(reporter)


def _sub(name: str) -> argparse.ArgumentParser:
    return cli_main.build_parser()[1][name][1]


def _output_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for a in parser._actions for flag in a.option_strings if a.dest in {r.name for r in REPORTERS}]


@pytest.mark.parametrize("command", ["run", "report"])
def test_one_option_per_reporter(command: str) -> None:
    parser = _sub(command)
    assert _output_flags(parser) == [r.option.flag for r in REPORTERS]
    help_text = parser.format_help()
    for r in REPORTERS:
        assert f"{r.option.flag} {r.option.metavar}" in help_text


@pytest.mark.parametrize("command", ["run", "report"])
def test_a_registered_reporter_is_an_option_of_both_commands(steps_reporter: Steps, command: str) -> None:
    assert "--steps" in _output_flags(_sub(command))


def test_run_knows_the_output_options_take_a_value(steps_reporter: Steps) -> None:
    assert split_argv(["--steps", "s.csv", "--json", "r.json", "train.py", "--steps", "3"]) == (
        ["--steps", "s.csv", "--json", "r.json"], "train.py", None, ["--steps", "3"])


def test_report_writes_a_registered_format(steps_reporter: Steps, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "r.json", tmp_path / "steps.csv"
    make_report().save(str(src))
    assert cli_main.main(["report", str(src), "--steps", str(out)]) == 0
    assert out.read_text().startswith("0,")
    assert capsys.readouterr().err == f"memprof: wrote {out}\n"


def test_run_takes_its_argv_raw_and_report_does_not() -> None:
    commands = {name: cmd for name, (cmd, _) in cli_main.build_parser()[1].items()}
    assert isinstance(commands["run"], ArgvCommand)
    assert not isinstance(commands["report"], ArgvCommand) and not isinstance(commands["monitor"], ArgvCommand)


def test_run_help_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--json PATH" in out and "--html PATH" in out and "no summary on stderr" in out
    assert cli_main.main(["run"]) == 2
