"""The advisor on fabricated runs: the batch model's arithmetic, budgets, and the CUDA advice (no GPU)."""

from __future__ import annotations

from typing import Any

import pytest

from memprof.advise import advise
from memprof.advise.batch_model import BatchModel, batch_model
from memprof.advise.budget import describe, plan_budget
from memprof.advise.optimizer import expected_state_bytes
from memprof.model import CudaStats, RecommendationKind
from memprof.model.run import IterationRecord, OomCapture, OptimizerInfo, RunData
from memprof.units import fmt_bytes

MiB = 1024**2
GiB = 1024**3


def it(index: int, frontier: list[tuple[int, int]], batch: int | None = 32, phase: str = "train",
       detailed: bool = True, **kw: Any) -> IterationRecord:
    peak = max(f + s for f, s in frontier) if frontier else 0
    return IterationRecord(index=index, phase=phase, detailed=detailed, peak_bytes=peak, end_bytes=0,
                           batch_size=batch, seconds=0.01, frontier=frontier, **kw)


def run(iterations: list[IterationRecord], **kw: Any) -> RunData:
    values: dict[str, Any] = dict(
        iterations=iterations, peak_bytes=max((i.peak_bytes for i in iterations), default=0),
        breakdown_at_peak={}, device_type="cpu", device_total_bytes=None, budget_bytes=None,
        memory_limit_bytes=None, optimizers=[], modules=[], cuda=None, oom=None, batch_size=32,
    )
    values.update(kw)
    return RunData(**values)


def kinds(data: RunData) -> dict[str, Any]:
    return {r.kind.value: r for r in advise(data).recommendations}


# -- the batch model ------------------------------------------------------------------------------

def test_prediction_is_the_largest_point_and_the_peak_point_moves_with_the_batch() -> None:
    # an optimizer step (mostly fixed) and a backward pass (mostly activations)
    m = BatchModel(b0=32, points=[(100 * MiB, 1 * MiB), (20 * MiB, 64 * MiB)], source="measured")
    assert m.predict(32) == 101 * MiB  # small batches: the optimizer step holds the peak
    assert m.predict(64) == 148 * MiB  # large ones: the backward pass
    assert m.predict(48) == max(100 * MiB + 1.5 * MiB, 20 * MiB + 96 * MiB)
    assert m.point(64) == (20 * MiB, 128 * MiB)


@pytest.mark.parametrize("budget", [150 * MiB, 150 * MiB + 12345, 101 * MiB + 7, 500 * MiB])
def test_largest_batch_really_fits_and_one_more_does_not(budget: int) -> None:
    m = BatchModel(b0=24, points=[(100 * MiB, 1 * MiB), (20 * MiB, 48 * MiB), (7 * MiB, 50 * MiB)],
                   source="measured", extra=3 * 1024)
    b = m.largest(budget)
    assert b is not None and b > 0
    assert m.predict(b) <= budget < m.predict(b + 1)


def test_nothing_fits_or_the_batch_does_not_matter() -> None:
    m = BatchModel(b0=8, points=[(90 * MiB, 0), (10 * MiB, 8 * MiB)], source="measured")
    assert m.largest(80 * MiB) == 0  # the fixed part alone is over
    m = BatchModel(b0=8, points=[(10 * MiB, 8 * MiB)], source="measured")
    assert m.largest(int(10.5 * MiB)) == 0  # batch size 1 needs 11 MiB
    assert m.largest(11 * MiB) == 1
    flat = BatchModel(b0=8, points=[(90 * MiB, 0)], source="measured")
    assert flat.largest(100 * MiB) is None


def test_batch_model_uses_full_iterations_of_the_reference_batch_only() -> None:
    data = run([
        it(0, [(10 * MiB, 32 * MiB), (40 * MiB, 0)]),  # the first step: optimizer state made
        it(1, [(30 * MiB, 32 * MiB)]),
        it(2, [(60 * MiB, 0)], batch=7),  # the data set's last, smaller batch: its bytes are not "scaled"
        it(3, [(5 * MiB, 0)], detailed=False),
        it(4, [(20 * MiB, 16 * MiB)], phase="eval"),
    ], pre_loop_peak=35 * MiB)
    m = batch_model(data)
    assert m is not None and m.source == "measured" and m.iterations == [0, 1, 4]
    assert m.predict(32) == 62 * MiB
    assert m.predict(16) == max(30 * MiB + 16 * MiB, 40 * MiB, 35 * MiB)
    assert m.predict(1) == 40 * MiB  # the first step's optimizer state creation, not 31 MiB
    assert batch_model(run([it(0, [(1, 1)])], batch_size=None)) is None


def test_no_batch_advice_on_cpu_without_a_budget_but_with_one() -> None:
    its = [it(0, [(10 * MiB, 32 * MiB)]), it(1, [(12 * MiB, 32 * MiB)])]
    assert "batch_size" not in kinds(run(its))
    rec = kinds(run(its, budget_bytes=76 * MiB))["batch_size"]
    assert (rec.current, rec.suggested, rec.budget_bytes) == (32, 64, 76 * MiB)
    assert rec.predicted_peak_bytes == 76 * MiB and "up to 64" in rec.message
    small = kinds(run(its, budget_bytes=28 * MiB))["batch_size"]
    assert small.suggested == 16 and "does not fit" in small.message
    none = kinds(run(its, budget_bytes=12 * MiB))["batch_size"]
    assert none.suggested == 0 and "no batch size fits" in none.message


@pytest.mark.parametrize("budget", [76 * MiB, 200 * MiB, 45 * MiB, 101 * MiB])
def test_the_per_sample_line_gives_the_measured_peak_at_the_current_batch(budget: int) -> None:
    # the peak point moves with the batch: the optimizer step at small batches, the backward at large
    its = [it(0, [(40 * MiB, 2 * MiB), (10 * MiB, 32 * MiB)]), it(1, [(12 * MiB, 32 * MiB)])]
    data = run(its, budget_bytes=budget)
    rec = kinds(data)["batch_size"]
    assert rec.suggested > 0
    fixed, per_sample = rec.extra["fixed_bytes"], rec.extra["per_sample_bytes"]
    measured = data.peak_bytes
    assert abs(fixed + per_sample * rec.current - measured) <= rec.current  # to the byte per sample
    assert abs(fixed + per_sample * rec.suggested - rec.predicted_peak_bytes) <= max(rec.suggested, rec.current) * 2
    assert f"{fmt_bytes(fixed)} fixed + {fmt_bytes(per_sample)} per sample" in rec.message


def test_a_suggestion_the_replay_does_not_confirm_is_not_given() -> None:
    from memprof.advise.batch_size import recommend
    from memprof.model.report import Budget

    data = run([it(0, [(10 * MiB, 32 * MiB)])])
    model = batch_model(data)
    assert model is not None
    budget = Budget(bytes=76 * MiB, source="--budget")
    assert recommend(data, model, budget).suggested == 66  # type: ignore[union-attr]
    # the replay, anchored at the measured 42 MiB at 32, sees 1.5 MiB per sample, not 1 MiB
    model.check = BatchModel(b0=32, points=[(-6 * MiB, 48 * MiB)], source="measured+replay")
    model.check_batch = 61
    rec = recommend(data, model, budget)
    assert rec is not None and rec.suggested == 54  # -6 + 1.5 * 54 = 75 <= 76 < -6 + 1.5 * 55
    assert rec.extra["unconfirmed_batch_size"] == 66 and "does not confirm" in rec.message
    assert rec.predicted_peak_bytes == model.check.predict(54) <= 76 * MiB
    model.check = BatchModel(b0=32, points=[(10 * MiB, 32 * MiB)], source="measured+replay")  # it agrees
    assert recommend(data, model, budget).suggested == 66  # type: ignore[union-attr]


def oom_capture(**kw: Any) -> OomCapture:
    values: dict[str, Any] = dict(requested_bytes=40 * MiB, live_bytes=90 * MiB, limit_bytes=100 * MiB,
                                  breakdown={"parameters": 2 * MiB, "activations": 88 * MiB}, by_module={},
                                  largest=[], step=0, source="memory-limit", batch_size=64,
                                  partial_frontier=[(2 * MiB, 128 * MiB)])
    values.update(kw)
    return OomCapture(**values)


def test_oom_without_a_full_step_uses_what_the_step_reached_as_a_lower_bound() -> None:
    data = run([], oom=oom_capture(), memory_limit_bytes=100 * MiB, batch_size=64)
    m = batch_model(data)
    assert m is not None and m.source == "partial" and m.lower_bound
    rec = kinds(data)["batch_size"]
    assert rec.current == 64 and rec.suggested == 49 and rec.budget_bytes == 100 * MiB  # 2 + 2*49 <= 100
    assert "lower bound" in rec.message


def test_oom_after_full_steps_keeps_the_measured_model_and_adds_the_failed_need() -> None:
    data = run([it(0, [(10 * MiB, 60 * MiB)]), it(1, [(10 * MiB, 60 * MiB)])], memory_limit_bytes=100 * MiB,
               oom=oom_capture(step=2, partial_frontier=[(10 * MiB, 100 * MiB)], batch_size=32), batch_size=32)
    m = batch_model(data)
    assert m is not None and m.source == "measured" and m.predict(32) == 110 * MiB
    assert kinds(data)["batch_size"].suggested == 28  # 10 + 100 * 28/32 = 97.5 <= 100


# -- budgets --------------------------------------------------------------------------------------

def test_budget_precedence_and_no_default_on_cpu() -> None:
    assert plan_budget(run([])) is None
    b = plan_budget(run([], memory_limit_bytes=100 * MiB))
    assert b is not None and (b.bytes, b.source) == (100 * MiB, "--memory-limit")
    b = plan_budget(run([], memory_limit_bytes=100 * MiB, budget_bytes=8 * GiB))
    assert b is not None and (b.bytes, b.source) == (8 * GiB, "--budget")


def cuda_run(**counters: int) -> RunData:
    c = CudaStats(allocated_bytes=10 * GiB, allocated_peak_bytes=30 * GiB, reserved_bytes=34 * GiB,
                  reserved_peak_bytes=34 * GiB, active_bytes=0, active_peak_bytes=0, inactive_split_bytes=0,
                  num_ooms=0, num_alloc_retries=0, device_free_bytes=80 * GiB - 34 * GiB - 512 * MiB,
                  device_total_bytes=80 * GiB)
    for name, value in counters.items():
        setattr(c, name, value)
    its = [it(0, [(5 * GiB, 24 * GiB)], cuda_allocated_peak=c.allocated_peak_bytes)]
    return run(its, device_type="cuda", device_total_bytes=80 * GiB, cuda=c, peak_bytes=c.allocated_peak_bytes)


def test_cuda_default_budget_states_context_and_allocator_overhead() -> None:
    data = cuda_run()
    b = plan_budget(data)
    assert b is not None and b.source == "device"
    assert b.parts == {"total_bytes": 80 * GiB, "context_bytes": 512 * MiB, "allocator_overhead_bytes": 4 * GiB}
    assert b.bytes == 80 * GiB - 512 * MiB - 4 * GiB
    assert "CUDA context" in b.note and "fragmentation" in b.note
    rec = kinds(data)["batch_size"]
    assert rec.budget_bytes == b.bytes and rec.suggested > 32
    # unknown free memory: an estimated context; overhead at least 5% of the allocated peak
    assert data.cuda is not None
    data.cuda.device_free_bytes = None
    data.cuda.reserved_peak_bytes = data.cuda.allocated_peak_bytes
    b = plan_budget(data)
    assert b is not None and b.parts["context_bytes"] == 512 * MiB
    assert b.parts["allocator_overhead_bytes"] == int(0.05 * 30 * GiB)


def test_cuda_budget_and_memory_limit_leave_room_for_context_and_allocator() -> None:
    data = cuda_run()
    data.budget_bytes = 24 * GiB  # a 24 GiB card
    b = plan_budget(data)
    assert b is not None and b.source == "--budget" and b.bytes == 24 * GiB - 512 * MiB - 4 * GiB
    data.budget_bytes, data.memory_limit_bytes = None, 40 * GiB  # the allocator's cap: no context in it
    b = plan_budget(data)
    assert b is not None and b.source == "--memory-limit" and b.bytes == 36 * GiB
    assert "fragmentation" in describe(b)


def test_cuda_batch_model_adds_the_allocators_rounding() -> None:
    data = cuda_run(allocated_peak_bytes=29 * GiB + 100 * MiB)
    m = batch_model(data)
    assert m is not None and m.extra == 100 * MiB and m.predict(32) == 29 * GiB + 100 * MiB


# -- the allocator ----------------------------------------------------------------------------------

def test_fragmentation_gets_allocator_config_and_empty_cache_would_not_help() -> None:
    recs = kinds(cuda_run(num_alloc_retries=3))
    cfg = recs["allocator_config"]
    assert cfg.suggested == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    assert "4.00 GiB" in cfg.message and "3 allocations" in cfg.message
    ec = recs["empty_cache"]
    assert ec.extra["helps"] is False and "would not help" in ec.message
    assert "nvidia-smi" in ec.message and "reserved" in ec.message and "allocated" in ec.message


def test_cached_memory_without_fragmentation_helps_other_processes_only() -> None:
    recs = kinds(cuda_run(reserved_peak_bytes=30 * GiB + 64 * MiB, reserved_bytes=30 * GiB + 64 * MiB))
    assert "allocator_config" not in recs
    ec = recs["empty_cache"]
    assert ec.extra["helps"] == "other processes only" and "20.1 GiB" in ec.message
    assert ec.predicted_peak_bytes == 30 * GiB  # this run's own peak does not change


def test_a_cuda_out_of_memory_is_not_fixed_by_empty_cache() -> None:
    data = cuda_run(reserved_peak_bytes=30 * GiB + 64 * MiB, reserved_bytes=30 * GiB + 64 * MiB)
    data.oom = oom_capture(source="cuda", step=1, limit_bytes=None, batch_size=32)
    ec = kinds(data)["empty_cache"]
    assert "would not have prevented" in ec.message and ec.extra["helps"] is False


def test_no_cuda_advice_on_cpu() -> None:
    recs = kinds(run([it(0, [(1, 1)])]))
    assert "empty_cache" not in recs and "allocator_config" not in recs


# -- the optimizer ----------------------------------------------------------------------------------

def test_optimizer_state_share_and_a_leaner_setting_with_numbers() -> None:
    adam = OptimizerInfo(type="Adam", state_bytes=200 * MiB, param_bytes=100 * MiB, param_count=25 * MiB)
    its = [it(0, [(100 * MiB, 20 * MiB), (400 * MiB, 0)]), it(1, [(500 * MiB, 20 * MiB), (400 * MiB, 0)])]
    data = run(its, optimizers=[adam], breakdown_at_peak={"optimizer_state": 200 * MiB}, peak_bytes=520 * MiB)
    rec = kinds(data)["optimizer"]
    assert rec.current == "Adam" and "200 MiB" in rec.message and "38% of the peak" in rec.message
    assert rec.extra["saving_bytes"] == 150 * MiB  # 8-bit moments: 2 bytes per parameter instead of 8
    assert rec.predicted_peak_bytes == 400 * MiB  # the first step's state creation now holds the peak
    assert [a["saving_bytes"] for a in rec.extra["alternatives"]][1:] == [int(200 * MiB * 0.97), 100 * MiB]


def test_expected_state_before_the_first_step() -> None:
    sgd = OptimizerInfo(type="SGD", state_bytes=0, param_bytes=10, param_count=3, options={"momentum": 0.9})
    assert expected_state_bytes(sgd) == 10
    sgd.options = {"momentum": 0}
    assert expected_state_bytes(sgd) == 0
    adam = OptimizerInfo(type="AdamW", state_bytes=0, param_bytes=10, param_count=3, options={"amsgrad": True})
    assert expected_state_bytes(adam) == 30


def test_advice_model_has_the_figures_and_never_raises() -> None:
    data = run([it(0, [(10 * MiB, 32 * MiB)])], budget_bytes=100 * MiB)
    adv = advise(data)
    assert adv.model is not None
    assert adv.model.budget is not None and adv.model.budget.bytes == 100 * MiB
    assert adv.model.batch is not None
    assert adv.model.batch.reference_batch_size == 32 and adv.model.batch.largest_batch_size == 90
    data.iterations = "garbage"  # type: ignore[assignment]
    adv = advise(data)
    assert adv.model is not None and adv.model.errors
    assert all(r.kind != RecommendationKind.BATCH_SIZE for r in adv.recommendations)
