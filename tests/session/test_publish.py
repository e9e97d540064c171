"""The live state a run publishes: what a long run's bounded step history gives it."""

from __future__ import annotations

from typing import Any

from memprof.session.config import SessionConfig
from memprof.session.core import Session


class _Channel:
    def __init__(self) -> None:
        self.states: list[Any] = []

    def publish(self, state: Any) -> None:
        self.states.append(state)


def test_the_timeline_counts_every_steps_time_even_those_left_out_of_the_tail() -> None:
    s = Session(SessionConfig(publish=False, advise=False))
    channel = _Channel()
    s.publisher._channel = channel
    history = s.steps.history
    for i in range(5_000):  # ten times the tail between two publishes
        history.add(i, 0, 1000 + i, 500, 1, 0.001)
    s.publisher.publish()
    state = channel.states[-1]
    assert state.step == 5_000
    last = state.samples[-1]
    assert (last.step, last.bytes) == (4_999, 5_999)
    assert abs(last.t - 5.0) < 1e-6  # the run's time, not the tail's
    assert len(state.samples) <= 300
