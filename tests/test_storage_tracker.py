"""The storage tracker: live bytes under views, in-place ops and frees; categories; the limit."""

from __future__ import annotations

import gc

import pytest
import torch

from memprof.collect.storage import ACTIVATIONS, GRADIENTS, OTHER, PARAMETERS, StorageTracker


def test_counts_new_storages_once_views_and_inplace_are_free() -> None:
    tr = StorageTracker()
    with tr:
        a = torch.zeros(1000)  # 4000 bytes
        before = tr.live
        v = a.view(10, 100)
        a.add_(1)
        v.mul_(2)
        b = a[10:20]
        assert tr.live == before == 4000
        c = a + 1
        assert tr.live == 8000
        del b, v
    assert tr.peak == 8000
    del c
    gc.collect()
    assert tr.live == 4000
    del a
    assert tr.live == 0


def test_peak_and_step_peak() -> None:
    tr = StorageTracker()
    with tr:
        tr.begin_step(0)
        x = torch.ones(256)  # 1 KiB
        y = torch.ones(512)  # 2 KiB
        del y
        tr.begin_step(1)
        assert tr.step_peak == 1024
        z = torch.ones(128)
    assert tr.peak == 3072
    assert tr.step_peak == 1024 + 512
    del x, z


def test_category_change_moves_bytes_and_fixes_the_peak_breakdown() -> None:
    tr = StorageTracker()
    with tr:
        w = torch.ones(100)
        t = torch.ones(50)
    assert tr.cat[OTHER] == 600
    tr.set_category(w, PARAMETERS)
    assert tr.cat[PARAMETERS] == 400 and tr.cat[OTHER] == 200
    assert tr.peak_cat[PARAMETERS] == 400  # created before the peak and alive: part of the peak
    assert sum(tr.peak_cat) == tr.peak
    tr.set_category(t, ACTIVATIONS, only_from=(PARAMETERS,))  # not from OTHER: unchanged
    assert tr.cat[ACTIVATIONS] == 0
    tr.set_category(t, GRADIENTS)
    assert tr.cat[GRADIENTS] == 200


def test_ensure_adopts_tensors_made_before() -> None:
    early = torch.ones(10)
    tr = StorageTracker()
    assert tr.ensure(early, step=-1) is not None
    assert tr.live == 40
    assert tr.ensure(early) is not None and tr.live == 40  # once only


def test_memory_limit_raises_out_of_memory_and_reports_the_request() -> None:
    tr = StorageTracker()
    tr.limit = 10_000
    seen: list[int] = []
    tr.on_over_limit = seen.append
    with tr:
        keep = torch.ones(1000)
        with pytest.raises(torch.OutOfMemoryError):
            torch.ones(5000)
    assert seen == [20_000]
    assert tr.live == 4000  # the refused tensor was dropped again
    del keep


def test_batch_scaled_storages_are_marked() -> None:
    tr = StorageTracker()
    tr.batch_size = 8
    tr.add_fixed_numel(64 * 3)
    tr.fixed_shapes.add((3, 64))  # a parameter of shape (64, 3), as sorted dims
    with tr:
        tr.begin_step(0)
        act = torch.ones(8, 64)  # leading dim is the batch
        flat = torch.ones(8 * 16, 4)  # batch * seq
        weight_like = torch.ones(64, 3)  # a parameter's size: fixed
        other = torch.ones(5, 5)
    refs = {r.shape: r for r in tr.live_refs()}
    assert refs[(8, 64)].scaled and refs[(128, 4)].scaled
    assert not refs[(64, 3)].scaled and not refs[(5, 5)].scaled
    del act, flat, weight_like, other
