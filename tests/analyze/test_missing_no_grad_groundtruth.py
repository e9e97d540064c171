"""missing_no_grad's figure against the ground truth: the script run as it is, and a copy where the
model call is wrapped in ``torch.no_grad()``, both under ../shared/tools/groundtruth.py's count;
the saving is the largest difference of the peaks of the same stretch of the run (between two
optimizer steps, or after the last one). memprof's figure must be within 20% of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED, run_memprof

pytestmark = pytest.mark.slow

TOOL = SHARED / "tools" / "groundtruth.py"
SEGMENTS = ROOT / "tests" / "scripts" / "groundtruth_segments.py"

# (script, args, the model call's line, or (old, new) for a script that has its own switch)
CASES: dict[str, tuple[Path, list[str], str | tuple[str, str]]] = {
    "demo": (ROOT / "examples" / "train_mlp.py", [],
             ("torch.no_grad() if careful else torch.enable_grad()", "torch.no_grad()")),
    "eval_no_grad": (SHARED / "cases" / "eval_no_grad.py", ["--epochs", "1"], "val_loss += criterion(model(x), y)"),
    "predict_no_grad": (ROOT / "tests" / "cases" / "predict_no_grad.py", [], "scores = model(batch)"),
    "target_network": (ROOT / "tests" / "cases" / "target_network.py", [], "next_q = target_net(next_state)"),
    "eval_callback": (ROOT / "tests" / "cases" / "eval_callback.py", [], "logits = model(x)"),
}


def with_no_grad(source: str, at: str | tuple[str, str]) -> str:
    """``source`` with the statement holding ``at`` wrapped in ``with torch.no_grad():``."""
    if isinstance(at, tuple):
        assert source.count(at[0]) == 1
        return source.replace(*at)
    lines = source.splitlines(keepends=True)
    [i] = [i for i, line in enumerate(lines) if at in line]
    indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    lines[i] = f"{indent}with torch.no_grad():\n{indent}    {lines[i].lstrip()}"
    return "".join(lines)


def test_the_copy_wraps_the_call() -> None:
    src = "def f():\n    for x in xs:\n        y = model(x)\n"
    assert with_no_grad(src, "y = model(x)") == "def f():\n    for x in xs:\n        with torch.no_grad():\n            y = model(x)\n"


def _segments(script: Path, args: list[str], out: Path) -> list[int]:
    env = dict(os.environ, GROUNDTRUTH_OUT=str(out))
    subprocess.run([sys.executable, str(SEGMENTS), str(TOOL), str(script), *args], env=env, check=True,
                   capture_output=True, timeout=300, cwd=script.parent)
    return list(json.loads(out.read_text())["segments"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_figure_is_the_measured_difference(name: str, tmp_path: Path) -> None:
    if not TOOL.is_file():
        pytest.skip("../shared/tools/groundtruth.py is not beside the repository")
    script, args, at = CASES[name]
    copy = tmp_path / script.name
    copy.write_text(with_no_grad(script.read_text(), at))
    on = _segments(script, args, tmp_path / "on.json")
    off = _segments(copy, args, tmp_path / "off.json")
    assert len(on) == len(off)
    truth = max(a - b for a, b in zip(on, off, strict=True))
    assert truth > 0
    report = tmp_path / "r.json"
    done = run_memprof("run", "--json", str(report), str(script), *args, cwd=script.parent)
    assert done.returncode == 0, done.stderr.decode()
    found = [f for f in json.loads(report.read_text())["findings"] if f["kind"] == "missing_no_grad"]
    assert found, "no missing_no_grad"
    assert found[0]["bytes"] == pytest.approx(truth, rel=0.2), (found[0]["message"], truth)
