"""From a variable to the statement that changes it (memprof/analyze/source.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from memprof.analyze.fixes import accumulation_fix, keep_detached_fix
from memprof.analyze.source import Located, Want, find_statement, owner_line, statement_start

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


BRANCHES = textwrap.dedent('''\
    def fit(data, as_number):
        total = 0.0
        cache = {}
        for step, x in enumerate(data):
            if as_number:
                total += x
            else:
                total += x.item()
            if as_number:
                cache.append(x)
            cache[step] = x.detach()
            totals[name] += x
            running = running + x * 2
            running += float(x)

    class A:
        def log(self, v):
            self.history.append(v)

    class B:
        def log(self, v):
            self.history.append(v.detach())
''')


def test_the_statement_that_matches_what_ran_wins(tmp_path: Path) -> None:
    p = tmp_path / "b.py"
    p.write_text(BRANCHES)
    f = str(p)
    history = Want("history", graph=True, root_op="AddBackward0", operand_ops=("AddBackward0", "MulBackward0"))
    assert find_statement(f, "fit", 1, 6, "total", want=history) == 6  # not the `.item()` one, though later
    assert find_statement(f, "fit", 1, 6, "total") == 8  # without what ran: the latest (the old guess)
    assert find_statement(f, "fit", 1, 6, "running", want=history) == 13  # not `+= float(x)`
    count = Want("count", graph=False, container="dict")
    assert find_statement(f, "fit", 1, 6, "cache", want=count) == 11  # a dict has no .append
    assert find_statement(f, "fit", 1, 6, "totals", want=history) == 12
    assert owner_line(f, "history", want=Want("count", graph=True), class_name="A") == 18
    assert owner_line(f, "history", want=Want("count", graph=False), class_name="B") == 22


def _located(tmp_path: Path, code: str, name: str) -> Located:
    p = tmp_path / "f.py"
    p.write_text(code + "\n")
    return Located(str(p), 1, name, True)


def test_fixes_rewrite_what_the_statement_adds(tmp_path: Path) -> None:
    def acc(code: str, name: str, scalar: bool = True) -> str:
        return accumulation_fix(_located(tmp_path, code, name), scalar)

    assert "`total += loss.item()`" in acc("total += loss", "total")
    assert "`loss += batch_loss.item()`" in acc("loss += batch_loss", "loss")
    assert "`t = t + (loss * n).item()`" in acc("t = t + loss * n", "t")
    assert "`totals[k] += loss.item()`" in acc("totals[k] += loss", "totals")
    bn = acc("self.m = 0.9 * self.m + 0.1 * x.mean(0)", "self.m", scalar=False)
    assert "`self.m = (0.9 * self.m + 0.1 * x.mean(0)).detach()`" in bn and "torch.no_grad()" in bn
    # A conditional: the branch that carries the graph is the one fixed (both then add a number).
    assert "`total_loss += loss.item()`" in acc("total_loss += loss.item() if careful else loss", "total_loss")
    assert "`t += loss.item() if careful else (loss * 2).item()`" in acc("t += loss.item() if careful else loss * 2", "t")
    words = acc("loss += loss.item()", "loss")  # nothing to rewrite: never `loss += loss.item()` again
    assert "loss.item()`" not in words and ".item()" in words

    def keep(code: str, name: str) -> str:
        return keep_detached_fix(_located(tmp_path, code, name))

    assert "`outs.append(y.detach())`" in keep("outs.append(y)", "outs")
    assert "`cache[step] = emb.detach()`" in keep("cache[step] = emb", "cache")
    assert "`history += [out.detach()]`" in keep("history += [out]", "history")
    assert "`feats.append(o.detach())`" in keep("hook = lambda m, i, o: feats.append(o)", "feats")
    assert "`self.outputs.append(out['logits'].detach())`" in keep("self.outputs.append(out['logits'])", "self.outputs")
