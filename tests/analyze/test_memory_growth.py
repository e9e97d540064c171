"""memory_growth on the boundaries a run records, and the tracker's live storages at its end."""

from __future__ import annotations

from memprof.analyze.base import RunEnd
from memprof.analyze.memory_growth import MemoryGrowthDetector
from memprof.model import Finding, FindingKind, Severity
from memprof.model.categories import ACTIVATIONS, OPTIMIZER_STATE, PARAMETERS
from memprof.model.run import IterationRecord
from tests.analyze.recording import BASE, GROWING, MiB, Ref, iteration, run_data


def _steps(ends: list[int], detailed: bool = True, phase: str = "train") -> list[IterationRecord]:
    return [iteration(i, phase, end_bytes=e, peak_bytes=e + 10 * MiB, detailed=detailed) for i, e in enumerate(ends)]


def _finish(its: list[IterationRecord], refs: list[Ref] | None = None, findings: list[Finding] | None = None,
            device: str = "cpu") -> list[Finding]:
    data = run_data(its, peak_bytes=max(it.peak_bytes for it in its), device_type=device)
    return MemoryGrowthDetector().on_finish(RunEnd(data, findings=findings or [], refs=lambda: refs or []))


def test_a_steady_loop_does_not_grow() -> None:
    assert _finish(_steps([BASE] * 12)) == []
    assert _finish(_steps([BASE + (i % 2) * 4 * MiB for i in range(12)])) == []  # up and down


def test_steady_growth_is_found_at_the_line_holding_most_new_memory() -> None:
    refs = [
        Ref(6 * MiB, ACTIVATIONS, 5, ("train.py", 30)),
        Ref(9 * MiB, ACTIVATIONS, 6, ("train.py", 31)),
        Ref(4 * MiB, ACTIVATIONS, 7, ("train.py", 30)),
        Ref(50 * MiB, PARAMETERS, 5, ("train.py", 12)),  # the model: not what grows
        Ref(50 * MiB, OPTIMIZER_STATE, 6, ("train.py", 13)),
        Ref(80 * MiB, ACTIVATIONS, 0, ("train.py", 40)),  # made before the growth began
        Ref(80 * MiB, ACTIVATIONS, 7, None),
    ]
    [f] = _finish(_steps(GROWING), refs)
    assert (f.kind, f.severity) == (FindingKind.MEMORY_GROWTH, Severity.WARNING)
    assert (f.file, f.line) == ("train.py", 30)  # 10 MiB from there, 9 from line 31
    assert (f.bytes, f.step) == (2 * MiB, 9)
    assert "over 8 steps" in f.message


def test_without_live_storages_it_has_no_line() -> None:
    [f] = _finish(_steps(GROWING))
    assert (f.file, f.line) == (None, None)


def test_a_specific_finding_explains_the_growth() -> None:
    for kind in (FindingKind.ACCUMULATED_TENSOR, FindingKind.RETAINED_GRAPH, FindingKind.MISSING_NO_GRAD):
        assert _finish(_steps(GROWING), findings=[Finding(kind, Severity.WARNING, "m")]) == []
    assert _finish(_steps(GROWING), findings=[Finding(FindingKind.LINGERING_TENSOR, Severity.WARNING, "m")]) != []


def test_too_few_or_too_small_steps_are_no_growth() -> None:
    assert _finish(_steps(GROWING[:7])) == []  # the first two are skipped: 5 boundaries left
    assert _finish(_steps([BASE] * 2 + [BASE + i * 1024 for i in range(8)])) == []  # 7 KiB in all


def test_watched_steps_count_on_cuda_only() -> None:
    assert _finish(_steps(GROWING, detailed=False)) == []  # the C heap's figure on CPU
    assert _finish(_steps(GROWING, detailed=False), device="cuda") != []
    assert _finish(_steps(GROWING, phase="eval")) == []


def test_live_storages_are_asked_for_only_when_there_is_growth() -> None:
    asked = []

    def refs() -> list[Ref]:
        asked.append(1)
        return []

    data = run_data(_steps([BASE] * 12), peak_bytes=BASE)
    assert MemoryGrowthDetector().on_finish(RunEnd(data, refs=refs)) == [] and asked == []


def test_bounded_containers_filling_up_are_no_growth() -> None:
    # deques with a maxlen (or a dict of them) fill up to their bound: no reference to drop.
    from memprof.collect.census import Observation

    def held(step: int, bounded: bool) -> Observation:
        return Observation(path="recent", file="train.py", function="main", first_line=1, line=9, is_container=True,
                           tensors=step, bytes=GROWING[step] - BASE, bounded=bounded)

    for bounded, grows in ((True, False), (False, True)):
        its = _steps(GROWING)
        for it in its:
            it.variables = [held(it.index, bounded)]
        d = MemoryGrowthDetector()
        for it in its:
            d.on_iteration(it, {})
        data = run_data(its, peak_bytes=max(it.peak_bytes for it in its))
        assert bool(d.on_finish(RunEnd(data, findings=[], refs=lambda: []))) == grows
