"""The Ray Tune integration: a real 2-trial sweep on a local Ray (CPU), and the metrics it adds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ray.tune")

from memprof.integrations.ray_tune import MemprofStopper, progress_metrics, report_metrics
from memprof.model import Finding, FindingKind, Recommendation, RecommendationKind, Report, Severity
from memprof.model.progress import Progress
from memprof.model.report import AdvisorModel, Budget

SWEEP = textwrap.dedent('''
    import json, sys, tempfile
    import ray
    from ray import tune
    import torch
    from torch import nn
    from memprof.integrations.ray_tune import MemprofStopper, profiled

    def train(config):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 4))
        opt = torch.optim.Adam(model.parameters())
        for epoch in range(3):
            for _ in range(4):
                opt.zero_grad()
                loss = model(torch.randn(config["batch_size"], 64)).pow(2).mean()
                loss.backward()
                opt.step()
            tune.report({"loss": loss.item(), "epoch": epoch})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as d:
        tuner = tune.Tuner(profiled(train, budget="2MiB"), param_space={"batch_size": tune.grid_search([16, 2048])},
                           tune_config=tune.TuneConfig(max_concurrent_trials=1),
                           run_config=tune.RunConfig(storage_path=d, stop=MemprofStopper(), verbose=0))
        out = []
        for r in tuner.fit():
            frame = r.metrics_dataframe
            out.append({"batch_size": r.config["batch_size"], "last": r.metrics["memprof"],
                        "peaks": [int(p) for p in frame["memprof/peak_bytes"]], "rows": len(frame)})
    print("RESULTS " + json.dumps(sorted(out, key=lambda o: o["batch_size"])))
''')


@pytest.mark.slow
def test_a_two_trial_sweep_reports_each_trials_peak_and_stops_the_one_that_does_not_fit(tmp_path: Path) -> None:
    (tmp_path / "sweep.py").write_text(SWEEP)
    proc = subprocess.run([sys.executable, "sweep.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULTS ")), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-3000:]
    small, big = json.loads(line[len("RESULTS "):])
    # The small batch fits 2 MiB: every epoch's result has the peak so far, and the last adds the
    # run's findings and the largest batch that fits, with its predicted peak within the budget.
    assert small["rows"] == 4 and all(0 < p <= 2 * 1024**2 for p in small["peaks"])
    last = small["last"]
    assert last["fits"] is True and last["warnings"] == 0 and last["findings"] == "" and last["steps"] == 12
    assert last["max_batch_size"] > 16 and last["predicted_peak_bytes"] <= 2 * 1024**2
    # The large one passes 2 MiB in its first epoch and is stopped there, before its other epochs.
    assert big["rows"] == 1 and big["peaks"][0] > 2 * 1024**2 and big["last"]["fits"] is False


def _report(**kw: object) -> Report:
    r = Report(script="train.py", peak_bytes=3000, **kw)  # type: ignore[arg-type]
    return r


def test_metrics_name_the_findings_and_the_batch_that_fits() -> None:
    f = Finding(kind=FindingKind.ACCUMULATED_TENSOR, severity=Severity.WARNING, message="m", file="t.py", line=7,
                variable="total")
    tip = Finding(kind=FindingKind.LINGERING_TENSOR, severity=Severity.INFO, message="m", file="t.py", line=9)
    rec = Recommendation(kind=RecommendationKind.BATCH_SIZE, message="m", predicted_peak_bytes=3900, current=8,
                         suggested=12, budget_bytes=4000)
    m = report_metrics(_report(findings=[f, tip], recommendations=[rec],
                               advisor=AdvisorModel(budget=Budget(bytes=4000, source="--budget"))))
    assert m["findings"] == "accumulated_tensor at t.py:7 (total)" and m["warnings"] == 1
    assert (m["fits"], m["max_batch_size"], m["predicted_peak_bytes"]) == (True, 12, 3900)
    assert "fits" not in report_metrics(_report()) and "max_batch_size" not in report_metrics(_report())
    assert progress_metrics(Progress(steps=3, peak_bytes=5000, budget_bytes=4000, findings=[f])) == {
        "peak_bytes": 5000, "warnings": 1, "steps": 3, "fits": False}
    stopper = MemprofStopper()
    assert stopper("t", {"memprof/fits": False}) and not stopper("t", {"memprof/fits": True})
    assert stopper("t", {"memprof": {"fits": False}}) and not stopper("t", {"loss": 1.0})
