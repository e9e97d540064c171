"""Forward passes and their fate: the pre-hook on the output's node, and its death with the graph."""

from __future__ import annotations

import gc

import torch
from torch import nn

from memprof.collect.graphs import ForwardTracker
from memprof.model.run import ForwardRecord


def _tracker() -> tuple[ForwardTracker, list[ForwardRecord], list[ForwardRecord]]:
    dead: list[ForwardRecord] = []
    backward: list[ForwardRecord] = []
    return ForwardTracker(dead.append, backward.append), dead, backward


def test_a_graph_dropped_without_backward_is_reported_dead_and_not_backpropagated() -> None:
    tr, dead, backward = _tracker()
    lin = nn.Linear(4, 4)
    out = lin(torch.ones(2, 4))
    rec = ForwardRecord(module="lin", site=None, step=0, phase="train")
    assert tr.watch(out, rec) and tr.pending() == [rec]
    tr.step = 3
    del out
    gc.collect()
    assert dead == [rec] and backward == [] and rec.dead and rec.dead_step == 3 and not rec.backpropagated
    assert tr.pending() == []
    assert not tr.watch(torch.ones(2), ForwardRecord(module="x", site=None, step=0, phase="train"))  # no graph


def test_a_backward_marks_the_record_with_its_line_then_the_graph_dies() -> None:
    tr, dead, backward = _tracker()
    lin = nn.Linear(4, 4)
    out = lin(torch.ones(2, 4)).sum()
    rec = ForwardRecord(module="lin", site=None, step=0, phase="train")
    tr.watch(out, rec)
    out.backward()
    line = __import__("sys")._getframe().f_lineno - 1
    assert backward == [rec] and rec.backpropagated and rec.backward_site == (__file__, line)
    del out
    assert dead == [rec]


def test_between_sampled_steps_the_last_backward_line_of_the_model_is_reused() -> None:
    tr, _, _ = _tracker()
    lin = nn.Linear(4, 4)
    first = ForwardRecord(module="lin", site=None, step=0, phase="train")
    out = lin(torch.ones(2, 4)).sum()
    tr.watch(out, first)
    out.backward()
    tr.sample_sites = False
    again = ForwardRecord(module="lin", site=None, step=1, phase="train")
    out = lin(torch.ones(2, 4)).sum()
    tr.watch(out, again)
    out.backward()  # another line: not looked up
    assert again.backward_site == first.backward_site is not None
    other = ForwardRecord(module="other", site=None, step=1, phase="train")
    out = lin(torch.ones(2, 4)).sum()
    tr.watch(out, other)
    out.backward()
    assert other.backward_site is not None and other.backward_site != first.backward_site  # first for this model
