"""The fake-tensor replay, and what the collectors record for the advisor (in process, fast)."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from memprof.collect.census import census
from memprof.collect.modules import ModuleStats, call_inputs
from memprof.collect.replay import isolated, make_replays, zeroes_grads_in_place
from memprof.collect.replay_step import pick_batch, replay
from memprof.collect.storage import StorageTracker
from memprof.model.categories import PARAMETERS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import advise_models


class Live(torch.utils._python_dispatch.TorchDispatchMode):
    """Live storage bytes, as ../shared/tools/groundtruth.py counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.ids: dict[int, int] = {}

    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if id(st) in self.ids or st.nbytes() == 0:
            return
        self.ids[id(st)] = st.nbytes()
        self.live += st.nbytes()
        self.peak = max(self.peak, self.live)
        weakref.finalize(st, self._free, id(st))

    def _free(self, key: int) -> None:
        self.live -= self.ids.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for o in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(o, torch.Tensor):
                self._track(o)
        return out


def measured_steps(model: nn.Module, opt: torch.optim.Optimizer, make: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
                   b: int, lm: bool) -> int:
    """The real peak of two training steps at batch ``b``, parameters and buffers included."""
    gc.collect()
    live = Live()
    for t in [*model.parameters(), *model.buffers()]:  # made before: counted once, from the start
        live._track(t)
    with live:
        for _ in range(2):
            x, y = make(b)
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = nn.functional.cross_entropy(out.flatten(0, 1) if lm else out, y.flatten())
            loss.backward()
            opt.step()
            del x, y, out, loss
    return live.peak


@pytest.mark.parametrize("name", ["cnn", "transformer", "lm"])
def test_replay_predicts_a_real_training_step_at_other_batch_sizes(name: str) -> None:
    torch.manual_seed(0)
    model, sample, target = advise_models.build(name)
    lm = target == "lm"

    def make(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if lm:
            return torch.randint(0, 4096, (b, *sample)), torch.randint(0, 4096, (b, *sample))
        return torch.randn(b, *sample), torch.randint(0, 10, (b,))

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    call = call_inputs(model, (make(8)[0],), {})
    result = replay(call, [opt])
    assert result.batch == pick_batch(model, call) and result.steps == 2
    for b in (8, 21):
        real = measured_steps(model, torch.optim.Adam(model.parameters(), lr=1e-3), make, b, lm)
        # the replay makes no targets: they are the only difference
        assert abs(result.predict(b) - real) <= 0.01 * real, (b, result.predict(b), real)


def test_replay_leaves_the_model_the_hooks_and_the_random_state_alone() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 4))
    model.eval()
    seen: list[object] = []
    model.register_forward_hook(lambda m, a, out: seen.append(out))
    model[0].register_forward_pre_hook(lambda m, a: seen.append(a))

    def keep(m: nn.Module, a: object, out: torch.Tensor) -> None:
        m.kept = out  # type: ignore[assignment]

    model[2].register_forward_hook(keep)
    model(torch.randn(2, 8))
    kept = model[2].kept
    seen.clear()
    weights = [p.detach().clone() for p in model.parameters()]
    call = call_inputs(model, (torch.randn(4, 8),), {})
    rng = torch.get_rng_state()
    call.training = True
    tracker = StorageTracker()
    with tracker:
        with isolated(model):
            result = replay(call, [torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)])
    assert result.predict(4) > 0
    assert seen == [] and model[2].kept is kept  # no hook saw a fake tensor
    assert not model.training and all(not m.training for m in model.modules())
    assert all(torch.equal(a, p) for a, p in zip(weights, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(rng, torch.get_rng_state())
    assert tracker.live == 0  # memprof's tracker saw none of it


def test_make_replays_variants_and_their_labels() -> None:
    torch.manual_seed(0)
    model, sample, _ = advise_models.build("transformer")
    call = call_inputs(model, (torch.randn(6, *sample),), {})
    stats = [ModuleStats(name=f"model.{n}" if n else "model", type=type(m).__name__, module_id=id(m),
                         activation_bytes=1000 if "layers." in n and n.count(".") == 2 else 0)
             for n, m in model.named_modules()]
    rs = make_replays([call], [torch.optim.AdamW(model.parameters())], stats)
    assert not rs.errors, rs.errors
    assert rs.base is not None and rs.amp is not None and rs.checkpoint is not None and rs.amp_dtype == "bfloat16"
    assert rs.checkpoint_names == ["body.layers.0", "body.layers.1"]
    assert rs.checkpoint_labels == ["model.body.layers.0", "model.body.layers.1"]
    assert rs.checkpoint_types == ["TransformerEncoderLayer"]
    b = 64
    assert rs.amp.predict(b) < rs.base.predict(b) and rs.checkpoint.predict(b) < rs.base.predict(b)
    del model
    gc.collect()
    gone = make_replays([call], [], stats)
    assert gone.base is None and gone.errors


# -- what the collectors record -----------------------------------------------------------------

def test_tracker_tells_activations_from_parameter_sized_tensors_by_shape() -> None:
    tracker = StorageTracker()
    w = nn.Parameter(torch.randn(128, 64))
    with tracker:
        tracker.begin_step(0)
        tracker.set_category(w, PARAMETERS)
        tracker.add_fixed_numel(w.numel())
        tracker.batch_size = 8
        grad_like = torch.zeros(64, 128)  # a transposed weight gradient: does not scale
        act = torch.zeros(8, 32, 32)  # the same numel as the weight, batch-shaped: scales
        assert tracker.scaled_live == act.untyped_storage().nbytes()
        del grad_like, act


def test_first_batch_scales_but_a_data_set_of_the_same_size_does_not() -> None:
    tracker = StorageTracker()
    with tracker:
        data = torch.randn(16, 4)  # a data set made before the loop
        x = data * 2  # the first batch: all of it
        tracker.first_inputs = {x.untyped_storage()._cdata}
        tracker.batch_size = 16
    assert tracker.scaled_live == x.untyped_storage().nbytes()
    tracker2 = StorageTracker()
    with tracker2:
        x2 = torch.randn(16, 4)
        tracker2.batch_size = 16  # inputs unknown: any pre-loop storage with the batch's leading dimension
    assert tracker2.scaled_live == x2.untyped_storage().nbytes()
    del data


def test_census_does_not_keep_a_frames_old_tensors_alive() -> None:
    def loop() -> bool:
        x = torch.randn(1000)
        ref = weakref.ref(x.untyped_storage())
        census(sys._getframe(), max_frames=1)
        x = torch.randn(1000)  # the script rebinds its variable: the old tensor must die now
        del x
        return ref() is None

    assert loop()


def test_in_place_zero_grad_is_read_from_code_not_from_strings(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text('p.add_argument("--keep", help="opt.zero_grad(set_to_none=False)")  # .zero_grad(False)\nopt.zero_grad()\n')
    b.write_text("for x in data:\n    opt.zero_grad( set_to_none = False )\n")
    c.write_text("model.zero_grad(False)\n")
    assert not zeroes_grads_in_place([str(a), str(tmp_path / "missing.py")])
    assert zeroes_grads_in_place([str(a), str(b)]) and zeroes_grads_in_place([str(c)])


def test_the_replay_scales_what_ops_make_from_the_batch_unless_it_has_a_parameters_size() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from memprof.collect.replay_step import _Counter

    counter = _Counter(61, fixed_numels={64})
    with FakeTensorMode(), counter:
        x = torch.empty(61, 64)
        flat = torch.cat([x.flatten(), torch.ones(3)])  # the batch's bytes, in a shape that does not say so
        reduced = x.sum(0)  # a parameter's number of elements (a bias's gradient)
        alone = torch.ones(5, 3)
        assert counter.scaled == (61 * 64 + 61 * 64 + 3) * 4
        assert counter.live == counter.scaled + (64 + 15) * 4
        del x, flat, reduced, alone


def test_an_optimizer_that_needs_a_closure_is_not_stepped_in_the_replay() -> None:
    """LBFGS reads its loss's value, which fake tensors lack: the replay runs forward and backward
    without its step (before, it raised: step() missing 'closure')."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    call = call_inputs(model, (torch.randn(4, 8),), {})
    call.training = True
    lbfgs = torch.optim.LBFGS(model.parameters())
    with_lbfgs = replay(call, [lbfgs], batch=4)
    without = replay(call, [], batch=4, steps=with_lbfgs.steps)
    assert with_lbfgs.predict(4) == without.predict(4) > 0
    assert lbfgs.state == {} and all(p.grad is None for p in model.parameters())


def test_a_second_step_is_replayed_only_where_the_first_leaves_state() -> None:
    """An optimizer replayed leaves its state, gradients zeroed in place stay through the next
    forward: two steps. An optimizer that is not replayed (LBFGS) leaves nothing: the second step
    would be the first again (its cost doubled on a long closure step), with stale gradients the
    loop does not have."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    call = call_inputs(model, (torch.randn(4, 8),), {})
    call.training = True
    lbfgs = torch.optim.LBFGS(model.parameters())
    adam = torch.optim.Adam(model.parameters())
    once = replay(call, [lbfgs], batch=4)
    assert once.steps == 1
    assert replay(call, [adam], batch=4).steps == 2
    assert replay(call, [lbfgs], batch=4, keep_grads=True).steps == 2
    twice = replay(call, [lbfgs], batch=4, steps=2)
    grads = sum(p.numel() * p.element_size() for p in model.parameters())
    assert once.predict(4) < twice.predict(4) <= once.predict(4) + grads
