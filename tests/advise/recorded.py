"""Recorded runs (``tests/advise/runs/*.json``, made by ``tests/advise/record_run.py``) as the
advisor reads them: the run data, and what the advisor said of it when it was recorded."""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

from memprof.collect.replay import ReplaySet
from memprof.collect.replay_step import ReplayResult
from memprof.model.report import CudaStats
from memprof.model.run import CallInputs, IterationRecord, OomCapture, OptimizerInfo, RunData
from tests.advise.record_run import RUNS

NAMES = sorted(p.stem for p in RUNS.glob("*.json"))


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _points(points: list[list[int]]) -> list[tuple[int, int]]:
    return [(int(f), int(s)) for f, s in points]


def _result(d: dict[str, Any] | None) -> ReplayResult | None:
    return None if d is None else ReplayResult(**{**_known(ReplayResult, d), "frontier": _points(d["frontier"])})


def _replays(d: dict[str, Any] | None) -> ReplaySet | None:
    if d is None:
        return None
    out = ReplaySet(**{k: v for k, v in _known(ReplaySet, d).items() if k not in ("call", "base", "amp", "checkpoint")})
    call = d.get("call")
    if call is not None:  # the model itself is gone: the advisor reads the call's batch size only
        out.call = CallInputs(module=None, args=(), kwargs={}, **_known(CallInputs, call))
    out.base, out.amp, out.checkpoint = _result(d.get("base")), _result(d.get("amp")), _result(d.get("checkpoint"))
    return out


def run_data(run: dict[str, Any]) -> RunData:
    values = _known(RunData, run)
    values["iterations"] = [IterationRecord(**{**_known(IterationRecord, it), "frontier": _points(it["frontier"])})
                            for it in run["iterations"]]
    values["optimizers"] = [OptimizerInfo(**_known(OptimizerInfo, o)) for o in run["optimizers"]]
    values["modules"] = []
    values["cuda"] = CudaStats.from_dict(run["cuda"]) if run.get("cuda") else None
    oom = run.get("oom")
    if oom is not None:
        values["oom"] = OomCapture(**{**_known(OomCapture, oom), "largest": [],
                                      "partial_frontier": _points(oom["partial_frontier"])})
    values["replays"] = _replays(run.get("replays"))
    return RunData(**values)


def load(name: str) -> tuple[RunData, dict[str, Any]]:
    """The run data of recorded run ``name``, and the advice recorded with it (the report's JSON:
    ``recommendations`` and ``advisor``)."""
    recorded = json.loads((RUNS / f"{name}.json").read_text())
    return run_data(recorded["run"]), recorded["advice"]
