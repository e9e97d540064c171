"""memprof's own failures (the advisor's replay) go to the report's warnings, never to stderr."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
import torch
from torch import nn

import memprof
from memprof.collect import replay as replay_module
from memprof.session import assemble
from memprof.session.quiet import kept_quiet


def _train(steps: int = 3) -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        loss = model(torch.randn(4, 8)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _failing_replay(*args: Any, **kwargs: Any) -> Any:
    """What a failing fake-tensor replay does: torch logs a traceback, warns, then raises."""
    try:
        raise RuntimeError("meta kernel exploded")
    except RuntimeError:
        logging.getLogger("torch._subclasses.fake_tensor").exception("failed while attempting to run meta for %s",
                                                                     "aten.mm")
    warnings.warn("a torch warning from the replay", UserWarning, stacklevel=1)
    raise RuntimeError("fake tensor replay failed")


def test_a_failing_replay_leaves_stderr_clean_and_warns_in_the_report(
        monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(replay_module, "replay", _failing_replay)
    with memprof.track() as session:
        _train()
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""
    report = session.report
    assert report is not None
    warned = "\n".join(report.warnings)
    assert "the advisor's replay: RuntimeError: fake tensor replay failed" in warned
    assert "failed while attempting to run meta for aten.mm: RuntimeError: meta kernel exploded" in warned
    assert "UserWarning: a torch warning from the replay" in warned
    assert report.status.value == "ok" and report.steps


def test_replays_raising_outright_is_a_warning(monkeypatch: pytest.MonkeyPatch,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        logging.getLogger("torch").error("torch says no")
        raise ValueError("no replay today")

    monkeypatch.setattr(assemble, "make_replays", boom)
    with memprof.track() as session:
        _train()
    assert capfd.readouterr().err == ""
    assert session.report is not None
    warned = session.report.warnings
    assert any("the advisor's replay failed: ValueError('no replay today')" in w for w in warned), warned
    assert any("torch logged torch says no" in w for w in warned), warned


def test_kept_quiet_restores_the_loggers() -> None:
    torch_log = logging.getLogger("torch")
    before = (list(torch_log.handlers), torch_log.propagate)
    with kept_quiet() as lines:
        logging.getLogger("torch.fx").warning("one")
        logging.getLogger("torch.fx").warning("one")  # the same line once
        warnings.warn("two", DeprecationWarning, stacklevel=1)
    assert lines == ["torch.fx logged one", "DeprecationWarning: two"]
    assert (list(torch_log.handlers), torch_log.propagate) == before
