"""memprof never breaks the run through the user's objects: at every point of a profiled run, the
model, the optimizer and their state dicts pickle, deep-copy, ``torch.save``/``torch.load``, make an
``AveragedModel``, compile and script as under plain python, the copies work and carry nothing of
memprof, and the run is still reported right afterwards."""

from __future__ import annotations

import copy
import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel

import memprof
from memprof.collect.native import NativeTracker
from memprof.model import FindingKind
from memprof.session import Session, SessionConfig
from tests.collect.conftest import hook, hook_cache  # noqa: F401 - the C++ op hook, for the native variant
from tests.conftest import ROOT, run_memprof, run_python

_HOOK_DICTS = ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks", "_forward_hooks_with_kwargs",
               "_forward_hooks_always_called", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
               "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")
_INSIDE: list[Callable[[], None]] = []  # what Probe's forward runs: checks from inside a forward


class Probe(nn.Module):
    """Runs the checks of :data:`_INSIDE` from inside the model's forward (a detailed step's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while _INSIDE:
            _INSIDE.pop()()
        return x


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), Probe(), nn.Linear(16, 3))


def _expected(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The model's output from its weights alone (no module call: nothing for memprof to see)."""
    h = F.relu(F.linear(x, state["0.weight"], state["0.bias"]))
    return F.linear(h, state["3.weight"], state["3.bias"])


def _clean(obj: Any, pickles: bool = True) -> None:
    """Nothing of memprof on ``obj`` (a model or an optimizer) nor in what pickling it writes."""
    if pickles:
        assert b"memprof" not in pickle.dumps(obj)
    if isinstance(obj, nn.Module):
        for m in obj.modules():
            for name in _HOOK_DICTS:
                assert not getattr(m, name, {}), (type(m).__name__, name)
    else:
        assert not obj._optimizer_step_pre_hooks and not obj._optimizer_step_post_hooks


def _same(_copy: nn.Module, x: torch.Tensor, want: torch.Tensor) -> None:
    with torch.no_grad():
        assert torch.allclose(_copy(x), want, atol=1e-6)


def check_user_objects(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, log: list[str],
                       where: str) -> None:
    """Every way a user copies or saves a model and its optimizer, as plain python does them."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    want = _expected(state, x)
    _clean(model)
    _clean(opt)
    clone = copy.deepcopy(model)
    _clean(clone)
    _same(clone, x, want)
    unpickled = pickle.loads(pickle.dumps(model))
    _same(unpickled, x, want)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    _clean(loaded)
    _same(loaded, x, want)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    fresh = _net()
    fresh.load_state_dict(saved["model"])
    _same(fresh, x, want)
    fresh_opt = type(opt)(fresh.parameters(), lr=0.05)  # type: ignore[call-arg]
    fresh_opt.load_state_dict(saved["opt"])
    assert len(fresh_opt.state) == len(opt.state)
    opt_copy = copy.deepcopy(opt)
    assert len(opt_copy.state) == len(opt.state)
    pickle.loads(pickle.dumps(opt))
    copy.deepcopy(model.state_dict())
    copy.deepcopy(opt.state_dict())
    swa = AveragedModel(model)
    swa.update_parameters(model)
    _clean(swa)
    _same(swa, x, want)
    log.append(where)


def _train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, at: dict[int, str], log: list[str]) -> None:
    """A canonical loop that checks the user's objects at the named points of the named steps."""
    torch.manual_seed(1)
    x_check = torch.randn(5, 8)
    total: Any = 0
    for step in range(steps):
        x = torch.randn(4, 8)
        y = torch.randint(0, 3, (4,))
        point = at.get(step)
        if point == "forward":
            _INSIDE.append(lambda: check_user_objects(model, opt, x_check, log, "inside a forward"))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if point == "backward":
            check_user_objects(model, opt, x_check, log, f"between backward and step {step}")
        opt.step()
        total += loss  # a planted bug: the history of every step, found whatever was copied
    assert float(total) > 0


@pytest.fixture(params=["python", pytest.param("native", marks=pytest.mark.slow)])
def tracker_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's tracker: Python's dispatch mode, or the C++ op hook's ledger (built if missing)."""
    if request.param == "native":
        request.getfixturevalue("hook")
        monkeypatch.setenv("MEMPROF_OPHOOK", "auto")
    return str(request.param)


def test_a_model_and_its_optimizer_copy_and_save_at_every_point_of_a_run(tracker_kind: str) -> None:
    model = _net()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    log: list[str] = []
    x = torch.randn(5, 8)
    with Session(SessionConfig()) as s:  # the first 10 steps in detail (enough to find `total`), then watched
        assert isinstance(s.tracker, NativeTracker) == (tracker_kind == "native")
        check_user_objects(model, opt, x, log, "before the first step")
        _train(model, opt, 24, {0: "forward", 3: "backward", 12: "backward", 16: "forward", 20: "backward"}, log)
        watched = not s.detail
        check_user_objects(model, opt, x, log, "in watch mode, after a step")
    check_user_objects(model, opt, x, log, "after the session stopped")
    assert watched and len(log) == 8, log
    assert log[1:3] == ["inside a forward", "between backward and step 3"]
    report = s.report
    assert report is not None
    assert not report.warnings, report.warnings
    assert [st.phase for st in report.steps] == ["train"] * 24
    assert all(st.detailed for st in report.steps[:10]) and not any(st.detailed for st in report.steps[10:])
    acc = [f for f in report.diagnoses if f.kind is FindingKind.ACCUMULATED_TENSOR]
    assert acc and acc[0].variable == "total"
    names = [m.name for m in report.modules]
    assert names.count("model") == 1  # the copies are models of their own, not the same model
    assert next(m for m in report.modules if m.name == "model").parameter_bytes == sum(
        p.numel() * 4 for p in model.parameters())


def test_an_averaged_model_made_in_watch_mode_follows_the_model() -> None:
    """EMA/SWA made after training started (watched steps), updated and evaluated every step."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with memprof.track(detail_steps=2) as s:
        swa = None
        for step in range(30):
            loss = F.cross_entropy(model(torch.randn(4, 8)), torch.randint(0, 3, (4,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step == 5:
                assert not s.detail
                swa = AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
            if swa is not None:
                swa.update_parameters(model)
    assert swa is not None
    _clean(swa, pickles=False)  # its EMA function is a closure: plain python can't pickle it either
    _clean(model)
    report = s.report
    assert report is not None and [st.phase for st in report.steps] == ["train"] * 30
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert not torch.allclose(swa(x), model(x))  # an average of the weights, not the weights
    twin = copy.deepcopy(swa)
    _clean(twin, pickles=False)
    _same(twin, x, swa(x).detach())


def test_a_model_scripts_and_traces_under_a_session() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(2, 8)
    with memprof.track(detail_steps=2):
        model(x).sum().backward()
        scripted = torch.jit.script(model)  # refuses a module with hooks it cannot compile
        traced = torch.jit.trace(model, (x,))
        want = model(x).detach()
        assert torch.allclose(scripted(x), want) and torch.allclose(traced(x), want)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        buf.seek(0)
        assert torch.allclose(torch.jit.load(buf)(x), want)


def _dynamo() -> Any:
    try:
        import torch._dynamo
        from torch._dynamo.utils import counters
    except Exception as e:  # pragma: no cover - a build without dynamo
        pytest.skip(f"torch.compile is unavailable: {e}")
    if not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile is unsupported on this Python")
    return counters


def test_a_compiled_model_trains_under_a_session_without_graph_breaks() -> None:
    counters = _dynamo()
    import torch._dynamo

    torch._dynamo.reset()
    counters.clear()
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    torch.manual_seed(2)
    batches = [(torch.randn(4, 8), torch.randint(0, 3, (4,))) for _ in range(8)]
    with memprof.track(detail_steps=2) as s:
        compiled = torch.compile(model, backend="eager")  # dynamo traces memprof's layer: no C++ needed
        for x, y in batches:
            out = compiled(x)
            assert torch.allclose(out, _expected(model.state_dict(), x), atol=1e-6)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert not counters["graph_break"], dict(counters["graph_break"])
    report = s.report
    assert report is not None and [st.phase for st in report.steps] == ["train"] * 8
    _clean(model)
    pickle.loads(pickle.dumps(model))
    torch._dynamo.reset()


@pytest.mark.slow
def test_a_script_that_saves_and_copies_its_model_in_its_loop_runs_as_under_python(tmp_path: Path) -> None:
    script = ROOT / "tests" / "scripts" / "save_and_copy.py"
    plain = run_python(str(script), str(tmp_path / "plain"), cwd=tmp_path)
    prof = run_memprof("run", "--json", str(tmp_path / "r.json"), str(script), str(tmp_path / "prof"), cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr.decode()
    assert prof.returncode == 0, prof.stderr.decode()
    assert prof.stdout == plain.stdout
    assert b"saved 40" in prof.stdout
