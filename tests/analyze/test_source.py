"""From a variable to the statement that changes it (memprof/analyze/source.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from memprof.analyze.source import find_statement, statement_start

SRC = textwrap.dedent('''\
    def train(model, data):
        total = 0
        outputs = []
        cache = {}
        for i, x in enumerate(data):
            out = model(x)
            total += out.sum()
            outputs.append(out)
            cache[i] = out
            self.history.extend([out])
            running = running + out
            last = out.detach()
        return total

    class T:
        def log(self, v):
            self.history.append(v)

    def other():
        total = 5
''')


def _write(tmp_path: Path) -> str:
    p = tmp_path / "train.py"
    p.write_text(SRC)
    return str(p)


def test_accumulating_statements_in_the_loop(tmp_path: Path) -> None:
    f = _write(tmp_path)
    assert find_statement(f, "train", 1, 6, "total") == 7
    assert find_statement(f, "train", 1, 6, "outputs") == 8
    assert find_statement(f, "train", 1, 6, "cache") == 9
    assert find_statement(f, "train", 1, 6, "running") == 11
    assert find_statement(f, "train", 1, 6, "last", rebinding=True) == 12
    assert find_statement(f, "train", 1, 6, "last") is None  # a plain rebinding is no accumulation


def test_attributes_can_be_changed_in_another_method(tmp_path: Path) -> None:
    f = _write(tmp_path)
    assert find_statement(f, "train", 1, 6, "self.history") == 10
    assert find_statement(f, "log", 16, 17, "self.history") == 17


def test_unknown_files_and_names(tmp_path: Path) -> None:
    assert find_statement(str(tmp_path / "missing.py"), "f", 1, 1, "x") is None
    assert find_statement(_write(tmp_path), "train", 1, 6, "nothing") is None


def test_statement_start_of_a_multiline_call(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text("x = f(\n    1,\n    2,\n)\ny = 3\n")
    assert statement_start(str(p), 3) == 1
    assert statement_start(str(p), 5) == 5


def test_mutations_inside_expressions_items_and_owner_classes(tmp_path: Path) -> None:
    p = tmp_path / "h.py"
    p.write_text(textwrap.dedent('''\
        feats = []
        hook = lambda m, i, o: feats.append(o)
        metrics = {}
        for step in range(3):
            metrics["loss"].append(step)

        class Meter:
            def update(self, v):
                self.total += v
    '''))
    f = str(p)
    assert find_statement(f, "<module>", 0, 4, "feats") == 2
    assert find_statement(f, "<module>", 0, 4, "metrics") == 5
    # trainer.meter.total is changed as self.total inside Meter (the owner's class file)
    assert find_statement(str(tmp_path / "missing.py"), "f", 1, 1, "trainer.meter.total") is None
    assert find_statement(f, "<module>", 0, 4, "trainer.meter.total", owner_file=f) == 9
