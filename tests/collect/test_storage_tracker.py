"""The storage trackers, Python's and the op hook's C++ ledger (each test runs on both): live bytes
under views, in-place ops and frees; categories; batch scaling; the limit (Python's only)."""

from __future__ import annotations

import gc
from typing import Any

import pytest
import torch

from memprof.collect.storage import StorageTracker
from memprof.model.categories import ACTIVATIONS, GRADIENTS, OTHER, PARAMETERS


def test_counts_new_storages_once_views_and_inplace_are_free(make_tracker: Any) -> None:
    tr = make_tracker()
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


def test_peak_and_step_peak(make_tracker: Any) -> None:
    tr = make_tracker()
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


def test_category_change_moves_bytes_and_fixes_the_peak_breakdown(make_tracker: Any) -> None:
    tr = make_tracker()
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


def test_ensure_adopts_tensors_made_before(make_tracker: Any) -> None:
    early = torch.ones(10)
    tr = make_tracker()
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


def test_batch_scaled_storages_are_marked(make_tracker: Any) -> None:
    tr = make_tracker()
    tr.batch_size = 8
    w = torch.ones(3, 64)
    tr.set_category(w, PARAMETERS)  # its shape, as sorted dims, is a parameter's
    tr.add_fixed_numel(w.numel())
    with tr:
        tr.begin_step(0)
        act = torch.ones(8, 64)  # leading dim is the batch
        flat = torch.ones(8 * 16, 4)  # batch * seq
        weight_like = torch.ones(64, 3)  # a parameter's size: fixed
        other = torch.ones(5, 5)
    refs = {r.shape: r for r in tr.live_refs()}
    assert refs[(8, 64)].scaled and refs[(128, 4)].scaled
    assert not refs[(64, 3)].scaled and not refs[(5, 5)].scaled
    assert not refs[(3, 64)].scaled and refs[(3, 64)].category == PARAMETERS
    del act, flat, weight_like, other


def test_what_ops_make_from_the_batch_scales_unless_it_has_a_parameters_size(make_tracker: Any) -> None:
    tr = make_tracker()
    bias = torch.ones(64)
    tr.set_category(bias, PARAMETERS)
    tr.add_fixed_numel(bias.numel())
    tr.batch_size = 8
    data = torch.ones(3, 5)  # not the batch's
    with tr:
        tr.begin_step(0)
        act = torch.ones(8, 64) * 2
        flat = torch.cat([act.flatten(), torch.ones(3)])  # the batch's bytes, in a shape that does not say so
        reduced = act.sum(0, keepdim=True)  # (1, 64): a bias's size, as its gradient is
        other = torch.cat([data.flatten(), torch.ones(3)])
    refs = {tuple(r.shape): r for r in tr.live_refs()}
    assert refs[(8, 64)].scaled and refs[(515,)].scaled
    assert not refs[(1, 64)].scaled and not refs[(18,)].scaled
    del act, flat, reduced, other


def test_old_transient_storages_and_where_a_lingering_candidate_dies(make_tracker: Any) -> None:
    tr = make_tracker()
    with tr:
        tr.begin_step(0)
        old = torch.ones(2000)  # 8000 bytes, made in step 0
        small = torch.ones(10)  # under min_old_bytes: not a candidate
        tr.begin_step(1, min_old_bytes=4096)
        assert tr.old_transient_bytes == 8000
        key = old.untyped_storage()._cdata
        items = tr.old_transient_items(1000)
        assert [(k, n, step) for k, n, step, _ in items] == [(key, 8000, 0)]
        assert tr.old_transient_items(8001) == []
        seq = items[0][3]
        assert tr.seq_of(key) == seq
        tr.set_linger([key])
        a = torch.ones(1000)
        del a  # the step's first fall
        assert tr.linger_index(key) == -1  # alive
        del old  # dies after one fall
        assert tr.linger_index(key) == 1 and tr.seq_of(key) == -1 and tr.old_transient_bytes == 0
        tr.set_linger([])
        assert tr.linger_index(key) == -1
    del small


def test_saved_tensors_become_activations_once(make_tracker: Any) -> None:
    tr = make_tracker()
    w = torch.ones(10)
    with tr:
        x = torch.ones(100)
        kept = tr.pack(x)
        assert kept is not x and kept.untyped_storage()._cdata == x.untyped_storage()._cdata  # detached
        assert tr.cat[ACTIVATIONS] == 400 and tr.cat[OTHER] == 0
        tr.pack(x.view(10, 10))
        assert tr.cat[ACTIVATIONS] == 400
        tr.set_category(w, PARAMETERS)
        tr.pack(w)  # a parameter saved for backward stays a parameter
        assert tr.cat[PARAMETERS] == 40 and tr.cat[ACTIVATIONS] == 400
        empty = torch.empty(0)
        assert tr.pack(empty).numel() == 0 and tr.cat[ACTIVATIONS] == 400


def test_records_name_the_line_module_shape_and_dtype(make_tracker: Any) -> None:
    import sys

    tr = make_tracker()
    tr.module = "model.fc"
    with tr:
        big = torch.ones(4, 4096, dtype=torch.float16)  # 32 KiB: its line is looked up
        line = sys._getframe().f_lineno - 1
        tr.module = ""
        small = torch.ones(3)
    refs = {r.nbytes: r for r in tr.live_refs()}
    assert refs[32768].site == (__file__, line) and refs[32768].module == "model.fc"
    assert refs[32768].shape == (4, 4096) and refs[32768].dtype == "float16" and refs[32768].scaled is False
    assert refs[12].site is None and refs[12].module == "" and refs[12].dtype == "float32"
    ref = tr.ref_of(big)
    assert ref is not None and ref.key == big.untyped_storage()._cdata and ref.seq < refs[12].seq
    del big, small


def test_categories_for_a_list_of_tensors_and_modules_charged_for_what_they_save(make_tracker: Any) -> None:
    tr = make_tracker()
    early = torch.ones(25)  # made before: counted when categorised
    with tr:
        g1, g2 = torch.ones(10), torch.ones(20)
        tr.set_categories([g1, None, g2, early], GRADIENTS)
        assert tr.cat[GRADIENTS] == 40 + 80 + 100 and tr.cat[OTHER] == 0
        tr.enter_module(1, "model")
        tr.enter_module(2, "model.fc")
        x = torch.ones(100)  # 400 bytes, made inside model.fc
        tr.pack(x)
        tr.pack(x.view(10, 10))  # the same storage: charged once
        tr.leave_module()
        y = torch.ones(50)
        tr.pack(y)
        tr.leave_module()
        assert tr.saved_bytes_of(2) == 400 and tr.saved_bytes_of(1) == 600 and tr.saved_bytes_of(3) == 0
        assert tr.take_saved_bytes() == {1: 600, 2: 400} and tr.take_saved_bytes() == {}
        assert tr.cat[ACTIVATIONS] == 600
    refs = {r.nbytes: r for r in tr.live_refs()}
    assert refs[400].module == "model.fc" and refs[200].module == "model" and refs[100].step == tr.step
    del g1, g2, x, y
