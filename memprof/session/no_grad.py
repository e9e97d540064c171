"""The figure of a missing ``no_grad``: how many of a line's graphs without a backward are alive at
once, and what ``no_grad`` would save on its calls, measured by a replay
(:mod:`memprof.collect.no_grad_probe`) while the model lives.

A line is replayed once (per model), at a call of it that looks like one that needs ``no_grad``:
an earlier graph of the same line is still alive without a backward, or one already died without.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memprof.collect.aside import run_aside
from memprof.collect.no_grad_probe import NoGradSaving, no_grad_saving
from memprof.model.run import ForwardRecord

if TYPE_CHECKING:
    from memprof.collect.modules import RootCall
    from memprof.session.core import Session


class NoGradProbe:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.alive: dict[tuple[str, int], int] = {}  # line -> its graphs alive without a backward
        self.dropped: set[tuple[str, int]] = set()  # lines with a graph dropped without a backward
        self.savings: dict[tuple[tuple[str, int], int], NoGradSaving | None] = {}  # (line, id(model))
        self._saved_total: dict[int, tuple[int, int]] = {}  # id(model) -> (step, its step's saved bytes so far)

    def per_call(self, key: int, step: int, total: int) -> int:
        """What model ``key``'s last call saved, from the step's running count ``total`` (a model
        called again and again in one step, an evaluation without optimizer, adds up there)."""
        last = self._saved_total.get(key)
        self._saved_total[key] = (step, total)
        if last is not None and last[0] == step and total >= last[1]:
            return total - last[1]
        return total

    def on_watched(self, call: RootCall, record: ForwardRecord) -> None:
        """A model call's graph is watched from now on."""
        site = record.site
        if site is None:
            return
        n = self.alive.get(site, 0) + 1
        self.alive[site] = record.alive = n
        if n >= 2 or site in self.dropped:
            saving = self._saving(call, site)
            if saving is not None:
                record.no_grad_saving = saving.at(n)

    def on_backward(self, record: ForwardRecord) -> None:
        self._gone(record)

    def on_dead(self, record: ForwardRecord) -> None:
        if not record.backpropagated:
            self._gone(record)
            if record.site is not None:
                self.dropped.add(record.site)

    def _gone(self, record: ForwardRecord) -> None:
        site = record.site
        if site is not None and self.alive.get(site, 0) > 0:
            self.alive[site] -= 1

    def _saving(self, call: RootCall, site: tuple[str, int]) -> NoGradSaving | None:
        key = (site, id(call.module))
        if key in self.savings:
            return self.savings[key]
        s = self.session
        inputs = s.modules.last_inputs.get((id(call.module), True))
        result = None
        # Inputs that could not be described can't be replayed: the finding says what was saved instead.
        if inputs is not None and inputs.complete:
            stopped, s.stopped = s.stopped, True  # the session's hooks stand still meanwhile
            try:
                result = run_aside(lambda: no_grad_saving(inputs))
            except Exception as e:
                s.warn(f"the replay of {call.name} without autograd failed: {e!r}")
            finally:
                s.stopped = stopped
        self.savings[key] = result
        return result
