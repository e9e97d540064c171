"""The optimizer advice with several optimizers: each has its own key, state and share."""

from __future__ import annotations

from memprof.advise import advise
from memprof.advise.optimizer import labels, own_share_at_peak
from memprof.model.run import OptimizerInfo
from tests.advise.test_units import it, run

MiB = 1024**2


def _adam(state: int) -> OptimizerInfo:
    return OptimizerInfo(type="Adam", state_bytes=state, param_bytes=state // 2, param_count=state // 8)


def test_two_optimizers_of_one_type_get_a_key_each() -> None:
    infos = [_adam(10), OptimizerInfo(type="SGD", state_bytes=0, param_bytes=4, param_count=1), _adam(20)]
    assert labels(infos) == ["Adam #1", "SGD", "Adam #2"]


def test_each_optimizer_has_its_own_share_of_the_peaks_state() -> None:
    infos = [_adam(100 * MiB), _adam(300 * MiB)]
    assert own_share_at_peak(infos, 400 * MiB) == [100 * MiB, 300 * MiB]
    assert own_share_at_peak(infos, 200 * MiB) == [50 * MiB, 150 * MiB]  # the peak held part of it
    assert own_share_at_peak(infos, 0) == [0, 0]
    assert own_share_at_peak(infos[:1], 120 * MiB) == [120 * MiB]  # one optimizer: all of the peak's state


def test_a_gans_two_adams_are_advised_apart() -> None:
    g, d = _adam(100 * MiB), _adam(300 * MiB)
    its = [it(0, [(100 * MiB, 20 * MiB)]), it(1, [(1000 * MiB, 20 * MiB)]), it(2, [(1000 * MiB, 20 * MiB)])]
    data = run(its, optimizers=[g, d], breakdown_at_peak={"optimizer_state": 400 * MiB}, peak_bytes=1020 * MiB)
    result = advise(data)
    figures = result.model.figures["optimizer"] if result.model is not None else {}
    assert set(figures) == {"Adam #1", "Adam #2"}
    assert (figures["Adam #1"]["state_at_peak_bytes"], figures["Adam #2"]["state_at_peak_bytes"]) == (100 * MiB, 300 * MiB)
    assert figures["Adam #1"]["share_of_peak"] == round(100 / 1020, 4)
    recs = [r for r in result.recommendations if r.kind.value == "optimizer"]
    assert [r.extra["optimizer"] for r in recs] == ["Adam #1", "Adam #2"]
    assert "Adam #1 keeps 100 MiB" in recs[0].message and "10% of the peak" in recs[0].message
    assert "Adam #2 keeps 300 MiB" in recs[1].message and "29% of the peak" in recs[1].message


def test_a_long_lbfgs_history_gets_a_shorter_one() -> None:
    flat = 10 * MiB
    lbfgs = OptimizerInfo(type="LBFGS", state_bytes=(2 * 20 + 2) * flat, param_bytes=flat, param_count=flat // 4,
                          options={"history_size": 100})
    its = [it(0, [(100 * MiB, 20 * MiB)]), it(1, [(520 * MiB, 20 * MiB)]), it(2, [(540 * MiB, 20 * MiB)])]
    data = run(its, optimizers=[lbfgs], breakdown_at_peak={"optimizer_state": 420 * MiB}, peak_bytes=560 * MiB)
    [rec] = [r for r in advise(data).recommendations if r.kind.value == "optimizer"]
    assert rec.current == "LBFGS" and rec.suggested == "LBFGS with history_size=10"
    assert rec.extra["saving_bytes"] == 10 * 2 * flat and "keeps 20 pairs" in rec.message
    short = OptimizerInfo(type="LBFGS", state_bytes=(2 * 5 + 2) * flat, param_bytes=flat, param_count=1)
    assert not [r for r in advise(run(its, optimizers=[short], peak_bytes=560 * MiB)).recommendations
                if r.kind.value == "optimizer"]
