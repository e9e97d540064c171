"""`--detail full`: every step measured, the census on a schedule that still catches late mistakes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import memprof
import memprof.session.config as session_config
import memprof.session.steps as session_steps
from memprof.model import FindingKind


def _loop(steps: int, mistake_from: int | None, kind: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    history: list[torch.Tensor] = []
    total: Any = 0.0
    for step in range(steps):
        out = model(torch.randn(16, 32))
        loss = out.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mistake_from is not None and step >= mistake_from:
            if kind == "append":
                history.append(out)  # graph-carrying outputs: memory grows
            else:
                total += loss  # the history of every step: no new bytes at the boundary
        else:
            total += loss.item()
    assert len(history) <= steps


@pytest.fixture
def census_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = session_steps.census

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("step", -1))
        return real(*args, **kwargs)

    monkeypatch.setattr(session_steps, "census", counting)
    return calls


def test_a_quiet_run_is_measured_every_step_and_censused_on_the_schedule(census_calls: list[int],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_config, "CENSUS_SHARE", 1.0)  # a census costs less than a step: every 16th
    with memprof.track(detail="full") as s:
        _loop(64, None, "")
    report = s.report
    assert report is not None and len(report.steps) == 64
    assert all(step.detailed for step in report.steps)
    assert not report.diagnoses
    # the first 10 iterations, then the multiples of 16 (and the odd change at the start)
    assert 10 + 3 <= len(census_calls) <= 10 + 3 + 4, census_calls
    assert {16, 32, 48} <= set(census_calls)


def test_where_a_census_costs_much_of_a_step_the_sampled_ones_are_rarer(census_calls: list[int],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session_config, "CENSUS_SHARE", 1e-9)  # any census is too dear: every 256th
    with memprof.track(detail="full") as s:
        _loop(64, None, "")
    assert s.report is not None and all(step.detailed for step in s.report.steps)
    assert not {16, 32, 48} & set(census_calls) and 10 <= len(census_calls) <= 10 + 3, census_calls


@pytest.mark.parametrize("kind, variable", [("append", "history"), ("add", "total")])
def test_a_mistake_that_starts_late_is_found_within_a_few_steps(census_calls: list[int], kind: str,
                                                                 variable: str) -> None:
    with memprof.track(detail="full") as s:
        _loop(60, 37, kind)
    report = s.report
    assert report is not None
    found = [f for f in report.diagnoses if f.kind is FindingKind.ACCUMULATED_TENSOR and f.variable == variable]
    assert found, [(f.kind, f.variable) for f in report.findings]
    assert found[0].step is not None and 37 < found[0].step <= 37 + 5
    assert set(range(38, 43)) <= set(census_calls)  # the census followed the change step by step
