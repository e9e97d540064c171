"""What a detector is: the events of a run it may react to, each returning the findings it makes.

The :class:`~memprof.analyze.doctor.Doctor` calls every detector of the registry
(:mod:`memprof.analyze.registry`) at each event and merges what they return. A detector keeps its
own state between events; it reads records (the timeline), never torch's live state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from memprof.model import Finding, FindingKind, Status
from memprof.model.run import ForwardRecord, IterationRecord, RunData


class LiveRef(Protocol):
    """What a detector may read of one live storage of the tracker (either tracker's record)."""

    @property
    def nbytes(self) -> int: ...
    @property
    def category(self) -> int: ...  # a code of memprof.model.categories
    @property
    def step(self) -> int: ...  # the step that made it
    @property
    def site(self) -> tuple[str, int] | None: ...  # the user line that made it


@dataclass
class RunEnd:
    """The end of a run, as a detector sees it."""

    data: RunData
    status: Status = Status.OK
    exc: BaseException | None = None
    # The doctor's findings so far: those of the run, and those that detectors earlier in the
    # registry made at this end (the doctor's own list, kept up to date as they come).
    findings: Sequence[Finding] = ()
    refs: Callable[[], Sequence[LiveRef]] | None = field(default=None, repr=False)

    @functools.cached_property
    def live_refs(self) -> Sequence[LiveRef]:
        """The tracker's live storages now (asked for once, and only by a detector that reads them)."""
        return self.refs() if self.refs is not None else ()


class Detector(Protocol):
    """One finding kind: what it reacts to, and the findings it makes there."""

    kind: ClassVar[FindingKind]

    def on_iteration(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> list[Finding]:
        """A diagnosed iteration boundary: its record (with the census) and the forward passes whose
        graphs are still alive, by ``id()`` of their output's ``grad_fn``."""
        ...

    def on_forward_dropped(self, rec: ForwardRecord, step: int) -> list[Finding]:
        """A forward pass's graph was destroyed without any backward reaching it."""
        ...

    def on_forwards_pending(self, pending: Sequence[ForwardRecord], step: int) -> list[Finding]:
        """The run ends with these forward passes' graphs still alive and never backpropagated."""
        ...

    def on_finish(self, end: RunEnd) -> list[Finding]:
        """The run is over (or failed)."""
        ...


class BaseDetector:
    """A detector that reacts to nothing: subclass it, set ``kind`` and override what you need."""

    kind: ClassVar[FindingKind]

    def on_iteration(self, it: IterationRecord, forwards: Mapping[int, ForwardRecord]) -> list[Finding]:
        return []

    def on_forward_dropped(self, rec: ForwardRecord, step: int) -> list[Finding]:
        return []

    def on_forwards_pending(self, pending: Sequence[ForwardRecord], step: int) -> list[Finding]:
        return []

    def on_finish(self, end: RunEnd) -> list[Finding]:
        return []
