"""The advisor's predictions against ground truth, end to end (``memprof run`` in a subprocess).

For each small model: ``memprof run --budget`` at one batch size; the suggested batch size must fit
per ../shared/tools/groundtruth.py, with its predicted peak within 3% of the measured one, and a batch
15% larger must not fit; the mixed-precision prediction is within 15% of a measured autocast run.
``--memory-limit 100MiB`` on a run that needs more: status ``oom``, exit 1, the failing line, and a
batch size that fits 100 MiB within 15% of the largest that does; an out-of-memory at step 0, at
step 1 (the first to hold the optimizer state through its backward) and at step 5 (the batch grows)
is held to the same test as ``--budget``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, run_memprof

SCRIPT = ROOT / "tests" / "scripts" / "advise_models.py"
MANY = ROOT / "tests" / "scripts" / "advise_groundtruth.py"
MiB = 1024**2

pytestmark = pytest.mark.slow


def groundtruth(shared: Path, runs: list[list[str]]) -> list[int]:
    """Peak live bytes of SCRIPT under each argument list, per the shared ground-truth tool."""
    args: list[str] = []
    for i, run in enumerate(runs):
        args += (["---"] if i else []) + run
    out = subprocess.run([sys.executable, str(MANY), str(shared / "tools" / "groundtruth.py"), str(SCRIPT), *args],
                         capture_output=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr.decode()
    return [int(x) for x in json.loads(out.stdout)]


def memprof_report(tmp_path: Path, *options: str, args: list[str], expect_rc: int = 0) -> dict[str, Any]:
    path = tmp_path / "r.json"
    proc = run_memprof("run", "-q", "--json", str(path), *options, str(SCRIPT), *args, cwd=tmp_path)
    assert proc.returncode == expect_rc, proc.stderr.decode()[-3000:]
    report: dict[str, Any] = json.loads(path.read_text())
    return report


def rec_of(report: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [r for r in report["recommendations"] if r["kind"] == kind]
    assert found, (kind, report["recommendations"], report.get("advisor"))
    return found[0]


BUDGET_CASES = [
    # model arguments, budget: each a different shape of memory (see advise_models.py)
    (["--model", "cnn", "--optim", "sgd", "--batch-size", "24"], "64MiB"),
    (["--model", "transformer", "--optim", "adamw", "--batch-size", "24"], "64MiB"),
    (["--model", "lm", "--batch-size", "20", "--keep-grads"], "100MiB"),
    (["--model", "cnn", "--batch-size", "24", "--loader", "--keep-grads"], "48MiB"),  # 59 of the 320 samples
    # sequence first: the batch is dimension 1 of (bptt, batch) ids, the logits are flattened to
    # (bptt * batch, vocab), and the LSTM's workspace (flat bytes) scales though its shape does not say so
    (["--model", "rnnlm", "--batch-size", "20"], "64MiB"),
]


@pytest.mark.parametrize("args, budget", BUDGET_CASES,
                         ids=["cnn-sgd", "transformer-adamw", "lm-keepgrads", "cnn-loader-keepgrads", "rnnlm"])
def test_suggested_batch_fits_budget_and_15_percent_more_does_not(shared: Path, tmp_path: Path, args: list[str],
                                                                   budget: str) -> None:
    from memprof.units import parse_size

    limit = parse_size(budget)
    args = [*args, "--steps", "2"]  # the first step (optimizer state made) and one in the steady state
    report = memprof_report(tmp_path, "--budget", budget, args=args)
    assert report["status"] == "ok"
    rec = rec_of(report, "batch_size")
    b, b0 = rec["suggested"], rec["current"]
    assert rec["budget_bytes"] == limit and b0 == int(args[args.index("--batch-size") + 1])
    assert b > 0
    bigger = math.ceil(b * 1.15)
    base = [a for i, a in enumerate(args) if a != "--batch-size" and args[i - 1] != "--batch-size"]
    runs = [[*base, "--batch-size", str(b)], [*base, "--batch-size", str(bigger)], [*base, "--batch-size", str(b0), "--amp"]]
    truth = groundtruth(shared, runs)
    assert truth[0] <= limit, (b, truth[0], limit)
    assert abs(rec["predicted_peak_bytes"] - truth[0]) <= 0.03 * truth[0], (rec["predicted_peak_bytes"], truth[0])
    assert truth[1] > limit, (bigger, truth[1], limit)
    mp = rec_of(report, "mixed_precision")
    assert abs(mp["predicted_peak_bytes"] - truth[2]) <= 0.15 * truth[2], (mp["predicted_peak_bytes"], truth[2])


def _line_of(text: str) -> int:
    """The line of ``text`` in the script's main loop (the last one: helpers' loops come first)."""
    return [i for i, line in enumerate(SCRIPT.read_text().splitlines(), 1) if line.strip().startswith(text)][-1]


@pytest.mark.parametrize("args, failing", [
    (["--model", "lm", "--batch-size", "64"], "loss.backward()"),  # dies in backward, at the first step
    (["--model", "cnn", "--batch-size", "512", "--loader"], "out = model(x)"),  # dies in the forward
], ids=["lm-backward", "cnn-forward"])
def test_memory_limit_oom_post_mortem_and_a_batch_that_fits(shared: Path, tmp_path: Path, args: list[str],
                                                            failing: str) -> None:
    limit = 100 * MiB
    report = memprof_report(tmp_path, "--memory-limit", "100MiB", args=args, expect_rc=1)
    assert report["status"] == "oom"
    oom = [f for f in report["findings"] if f["kind"] == "oom"]
    assert len(oom) == 1 and oom[0]["file"] == str(SCRIPT) and oom[0]["line"] == _line_of(failing), oom
    post = report["oom"]
    assert post["limit_bytes"] == limit and post["requested_bytes"] > 0
    assert post["live_bytes"] <= limit < post["live_bytes"] + post["requested_bytes"]
    assert sum(post["breakdown"].values()) == post["live_bytes"] and post["breakdown"]["parameters"] > 0
    assert post["by_module"] and report["largest_tensors"]
    assert any(t["file"] == str(SCRIPT) and t["line"] for t in report["largest_tensors"])
    rec = rec_of(report, "batch_size")
    b = rec["suggested"]
    assert 0 < b < rec["current"] and rec["budget_bytes"] == limit and rec["predicted_peak_bytes"] <= limit
    base = [a for i, a in enumerate(args) if a != "--batch-size" and args[i - 1] != "--batch-size"]
    truth = groundtruth(shared, [[*base, "--batch-size", str(b)], [*base, "--batch-size", str(math.ceil(b * 1.15))]])
    assert truth[0] <= limit, (b, truth[0])  # fits...
    assert truth[1] > limit, (b, truth[1])  # ...and is within 15% of the largest that does
    assert abs(rec["predicted_peak_bytes"] - truth[0]) <= 0.03 * truth[0]


def _with(args: list[str], option: str, value: int) -> list[str]:
    """``args`` with ``option``'s value replaced."""
    i = args.index(option)
    return [*args[:i + 1], str(value), *args[i + 2:]]


@pytest.mark.parametrize("args, step", [
    (["--model", "mlp", "--batch-size", "2048", "--steps", "3"], 0),  # in the first forward: a replay
    # Adam's state is made by the first step(): the second step is the first to hold it through its backward
    (["--model", "mlp", "--batch-size", "1024", "--steps", "3"], 1),
    (["--model", "mlp", "--batch-size", "256", "--steps", "6", "--grow-at", "5", "--grow-to", "1024"], 5),
], ids=["step0", "step1-optimizer-state", "step5-batch-grows"])
def test_an_out_of_memory_at_any_step_suggests_a_batch_that_fits_and_15_percent_more_does_not(
        shared: Path, tmp_path: Path, args: list[str], step: int) -> None:
    limit = 36 * MiB
    report = memprof_report(tmp_path, "--memory-limit", "36MiB", args=args, expect_rc=1)
    assert report["status"] == "oom"
    post = report["oom"]
    assert post["step"] == step and post["limit_bytes"] == limit
    # the failed request is requested, not live; no step ends above the limit or its own peak
    assert post["live_bytes"] <= limit < post["live_bytes"] + post["requested_bytes"]
    assert all(s["end_bytes"] <= min(limit, s["peak_bytes"]) and s["peak_bytes"] <= limit for s in report["steps"])
    assert [s["phase"] for s in report["steps"]] == ["train"] * (step + 1)  # the failing step too
    rec = rec_of(report, "batch_size")
    option = "--grow-to" if "--grow-to" in args else "--batch-size"
    b = rec["suggested"]
    assert rec["current"] == int(args[args.index(option) + 1]) and 0 < b < rec["current"]
    assert rec["budget_bytes"] == limit and rec["predicted_peak_bytes"] <= limit
    truth = groundtruth(shared, [_with(args, option, b), _with(args, option, math.ceil(b * 1.15))])
    assert truth[0] <= limit, (b, truth[0], limit)
    assert truth[1] > limit, (b, truth[1], limit)
    assert abs(rec["predicted_peak_bytes"] - truth[0]) <= 0.03 * truth[0], (rec["predicted_peak_bytes"], truth[0])
