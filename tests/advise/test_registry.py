"""The advisors of the registry on recorded runs (``tests/advise/runs``, in process, fast): each alone
says what the whole advisor said when the run was recorded, and what it says holds up."""

from __future__ import annotations

import json
from typing import Any

import pytest

import memprof.advise.registry
from memprof.advise import Advice, advise
from memprof.advise.advisor import Advisor, Inputs, plan
from memprof.model import Recommendation, RecommendationKind, Report
from memprof.model.codec import advisor_dict, report_to_dict
from memprof.model.decode import report_from_dict
from memprof.model.report import AdvisorModel
from memprof.model.run import RunData
from tests.advise.record_run import advice_dict
from tests.advise.recorded import NAMES, load

MiB = 1024**2

# The kinds of recommendation each advisor makes: a new advisor gets its line here too.
KINDS = {
    "batch_size": {"batch_size"},
    "mixed_precision": {"mixed_precision"},
    "gradient_checkpointing": {"gradient_checkpointing"},
    "optimizer": {"optimizer"},
    "allocator": {"empty_cache", "allocator_config"},
}
SHARED = {"budget", "replay", "errors"}  # the advisor model's keys that plan() writes, not one advisor


def alone(advisor: Advisor, data: RunData) -> tuple[list[Recommendation], AdvisorModel]:
    out = AdvisorModel()
    recs = advisor.advise(plan(data, out), out)
    return recs, out


def test_recorded_runs_get_the_advice_they_got_when_recorded() -> None:
    assert len(NAMES) >= 10
    for name in NAMES:
        data, recorded = load(name)
        assert advice_dict(advise(data)) == recorded, name


def test_every_advisor_of_the_registry_is_tested_here() -> None:
    assert [a.name for a in memprof.advise.registry.ADVISORS] == list(KINDS)


@pytest.mark.parametrize("advisor", memprof.advise.registry.ADVISORS, ids=lambda a: a.name)
def test_each_advisor_alone_says_what_it_said_in_the_recorded_runs(advisor: Advisor) -> None:
    said = 0
    for name in NAMES:
        data, recorded = load(name)
        recs, out = alone(advisor, data)
        got = advice_dict(Advice(recommendations=recs, model=out))
        mine = [r for r in recorded["recommendations"] if r["kind"] in KINDS[advisor.name]]
        assert got["recommendations"] == mine, name
        figures = {k: v for k, v in (got["advisor"] or {}).items() if k not in SHARED}
        assert figures == {k: v for k, v in (recorded["advisor"] or {}).items() if k in figures}, name
        assert not out.errors, (name, out.errors)
        said += bool(mine)
    assert said, f"no recorded run gets advice from {advisor.name}"


def rec_of(name: str, kind: str) -> tuple[RunData, dict[str, Any]]:
    data, recorded = load(name)
    found = [r for r in recorded["recommendations"] if r["kind"] == kind]
    assert len(found) == 1, (name, kind)
    return data, found[0]


@pytest.mark.parametrize("name", ["mlp_budget", "cnn_sgd", "transformer_adamw", "lm_keep_grads", "lm_oom_backward"])
def test_batch_size_the_suggested_batch_fits_and_one_more_does_not(name: str) -> None:
    data, rec = rec_of(name, "batch_size")
    out = AdvisorModel()
    inputs = plan(data, out)
    assert inputs.batch is not None and inputs.budget is not None
    b = rec["suggested"]
    assert b > 0 and rec["budget_bytes"] == inputs.budget.bytes
    assert inputs.batch.predict(b) == rec["predicted_peak_bytes"] <= inputs.budget.bytes < inputs.batch.predict(b + 1)
    assert out.batch is None  # plan() leaves the batch figures to the batch-size advisor
    memprof.advise.registry.ADVISORS[0].advise(inputs, out)
    assert out.batch is not None and out.batch.largest_batch_size == b


def test_batch_size_after_an_oom_at_the_first_step_comes_from_the_replay() -> None:
    data, rec = rec_of("lm_oom_backward", "batch_size")
    assert data.oom is not None and data.oom.step == 0  # died in its first step
    assert rec["extra"]["model_source"] == "replay" and 0 < rec["suggested"] < rec["current"] == 64


def test_mixed_precision_predicts_less_than_the_run_measured() -> None:
    for name in ["cnn_sgd", "transformer_adamw", "lm_keep_grads"]:
        _, rec = rec_of(name, "mixed_precision")
        saving = rec["extra"]["saving_bytes"]
        assert rec["suggested"] == "bfloat16" and saving > 0
        assert "torch.autocast(\"cpu\"" in rec["message"]


def test_gradient_checkpointing_names_the_repeated_blocks() -> None:
    data, rec = rec_of("transformer_adamw", "gradient_checkpointing")
    assert data.replays is not None and data.replays.checkpoint is not None
    assert rec["suggested"] == ["model.body.layers.0", "model.body.layers.1"]
    assert rec["extra"]["saving_bytes"] > 0 and "TransformerEncoderLayer" in rec["message"]


def test_optimizer_a_leaner_one_saves_state_made_at_the_first_step() -> None:
    data, rec = rec_of("mlp_adam_oom", "optimizer")
    assert rec["current"] == "Adam" and rec["extra"]["saving_bytes"] > 0
    model = plan(data, AdvisorModel()).batch
    assert model is not None  # what the step needs (it died in it): the saving comes off that
    assert rec["predicted_peak_bytes"] <= 0.95 * model.predict(model.b0)


def test_allocator_says_nothing_on_cpu_and_reads_the_cuda_counters() -> None:
    allocator = memprof.advise.registry.ADVISORS[-1]
    for name in NAMES:
        data, _ = load(name)
        recs, out = alone(allocator, data)
        assert bool(recs) == bool(out.figures) == (data.device_type == "cuda"), name
    data, rec = rec_of("cuda_transformer_fragmented", "allocator_config")
    assert rec["suggested"] == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    assert "2 allocations had to free the cache and retry" in rec["message"]
    _, ec = rec_of("cuda_cnn_cached", "empty_cache")
    assert ec["extra"]["helps"] == "other processes only" and ec["extra"]["cached_free_bytes"] >= 1024 * MiB


def test_a_failing_advisor_is_an_error_and_the_others_still_advise(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        name = "broken"

        def advise(self, inputs: Inputs, out: AdvisorModel) -> list[Recommendation]:
            raise ValueError("no")

    data, recorded = load("transformer_adamw")
    advisors = list(memprof.advise.registry.ADVISORS)
    monkeypatch.setattr(memprof.advise.registry, "ADVISORS", [Broken(), *advisors])
    advice = advise(data)
    assert advice.model is not None and advice.model.errors == ["broken: ValueError('no')"]
    assert advice_dict(advice)["recommendations"] == recorded["recommendations"]


def test_a_new_advice_is_one_class_and_its_line_in_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    class Prefetch:  # a kind of advice this memprof does not know yet
        name = "prefetch"

        def advise(self, inputs: Inputs, out: AdvisorModel) -> list[Recommendation]:
            out.figures[self.name] = {"steps": len(inputs.data.iterations)}
            return [Recommendation(kind=RecommendationKind("prefetch"), message="prefetch the next batch")]

    data, recorded = load("cnn_sgd")
    monkeypatch.setattr(memprof.advise.registry, "ADVISORS", [*memprof.advise.registry.ADVISORS, Prefetch()])
    got = advice_dict(advise(data))
    assert got["recommendations"][:-1] == recorded["recommendations"]
    assert got["recommendations"][-1]["kind"] == "prefetch" and got["advisor"]["prefetch"] == {"steps": 2}
    assert list(got["advisor"])[-2:] == ["prefetch", "replay"]


# -- the report's budget, from a real advisor's output ------------------------------------------

@pytest.mark.parametrize("name", [n for n in NAMES if n != "mlp_no_budget"])
def test_the_report_gives_the_budget_the_advisor_planned_for(name: str) -> None:
    data, recorded = load(name)
    advice = advise(data)
    assert advice.model is not None and advice.model.budget is not None
    planned = advice.model.budget.bytes
    assert advisor_dict(advice.model)["budget"]["bytes"] == planned == recorded["advisor"]["budget"]["bytes"]
    # Through the report's JSON, as `memprof report` reads it back. The advisor's figures alone must
    # say it: the recommendations carry a budget too, and hid a summary that read a key the
    # advisor never wrote.
    for recs in (advice.recommendations, []):
        text = json.dumps(report_to_dict(Report(script="train.py", recommendations=recs, advisor=advice.model)))
        assert report_from_dict(json.loads(text)).budget_bytes == planned, recs
    # the advisor's output as the report file recorded it
    d = {**report_to_dict(Report(script="train.py")), "advisor": recorded["advisor"]}
    assert report_from_dict(d).budget_bytes == planned


def test_no_budget_without_one_on_cpu() -> None:
    data, _ = load("mlp_no_budget")
    advice = advise(data)
    report = Report(script="train.py", recommendations=advice.recommendations, advisor=advice.model)
    assert advice.model is not None and advice.model.budget is None and report.budget_bytes is None
