"""The live state a run publishes: what a long run's bounded step history gives it."""

from __future__ import annotations

from typing import Any

from memprof.session.config import SessionConfig
from memprof.session.core import Session


class _Channel:
    def __init__(self) -> None:
        self.states: list[Any] = []
        self.clients = 0
        self.accepted = 0

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


def test_the_state_is_rebuilt_often_only_while_someone_reads_it() -> None:
    s = Session(SessionConfig(publish=False, advise=False))
    channel = _Channel()
    s.publisher._channel = channel
    s.publisher.publish()
    assert not s.publisher.due(0.5)  # nobody reads: every IDLE_PERIOD only
    assert s.publisher.due(2.5)
    channel.accepted = 1  # a reader connected: a fresh state at once...
    assert s.publisher.due(0.15)
    s.publisher.publish()
    assert not s.publisher.due(0.15)  # ...then, gone again, the idle pace
    channel.clients = 1
    assert s.publisher.due(0.15) and not s.publisher.due(0.05)

