"""Where iterations begin and end: optimizer steps (closures inside), updates by hand, backward
passes, and the repeated calls of an evaluation loop; real training code's shapes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import memprof


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4))


@pytest.mark.parametrize("detail", ["auto", "full"])
def test_each_validation_call_is_one_eval_iteration_in_watch_and_in_detail(detail: str) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with memprof.track(detail=detail) as s:
        for _epoch in range(2):
            for _ in range(30):  # past the 10 detailed steps of the default mode: watched
                loss = model(torch.randn(16, 32)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                for _ in range(5):
                    model(torch.randn(8, 32))
    report = s.report
    assert report is not None
    phases = [(st.phase, st.batch_size) for st in report.steps]
    assert phases == ([("train", 16)] * 30 + [("eval", 8)] * 5) * 2


def test_a_no_grad_call_inside_a_training_step_is_not_an_evaluation() -> None:
    """Pseudo-labels from the model itself, and a target network: part of each training step."""
    model, target = _model(), _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with memprof.track() as s:
        for _ in range(24):
            x = torch.randn(16, 32)
            with torch.no_grad():
                pseudo = model(x).argmax(1)
                goal = target(x)
            out = model(x + 0.1)
            loss = nn.functional.cross_entropy(out, pseudo) + (out - goal).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    report = s.report
    assert report is not None
    assert [st.phase for st in report.steps] == ["train"] * 24


def test_a_watched_steps_record_stays_small() -> None:
    """A run keeps one record per step (a million steps is a million records): no per-record
    dict of attributes, no empty containers made for what only detailed steps fill."""
    import tracemalloc

    from memprof.model.run import IterationRecord

    tracemalloc.start()
    try:
        recs = [IterationRecord(index=1000 + i, phase="train", detailed=False, peak_bytes=10**6, end_bytes=10**5,
                                batch_size=16, seconds=i * 1e-3) for i in range(10_000)]
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size / len(recs) < 250  # 168 bytes on CPython 3.11; 456 with a __dict__ and four empty containers
    assert not hasattr(recs[0], "__dict__") and recs[0].variables == () and recs[0].frontier == ()


# -- iterations from what autograd and the optimizer do ---------------------------------------------
HERE = __file__


def _line(marker: str) -> int:
    """The line of this file that carries ``marker`` (a comment at the end of a statement)."""
    with open(HERE) as fh:
        hits = [i + 1 for i, text in enumerate(fh) if text.rstrip().endswith(marker)]
    assert len(hits) == 1, marker
    return hits[0]


def _warnings(report: memprof.Report) -> list[tuple[str, int | None, str | None]]:
    return [(f.kind.value, f.line, f.variable) for f in report.findings if f.severity.value in ("warning", "error")]


def _phases(report: memprof.Report) -> str:
    return "".join(st.phase[0] for st in report.steps)


def _manual_step(model: nn.Module, style: str, lr: float = 0.01) -> None:
    """Weights updated by hand, as real code writes it."""
    if style == "no_grad":
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
        model.zero_grad()
    elif style == "data":  # PyTorch's regression and word-language-model examples (zero_grad first)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
    else:  # the old tutorials: nothing the version counters see
        for p in model.parameters():
            p.data -= lr * p.grad.data
            p.grad.data.zero_()


@pytest.mark.parametrize("style", ["no_grad", "data", "old_data"])
def test_manual_sgd_one_iteration_per_update(style: str) -> None:
    model = _model()
    x, y = torch.randn(64, 32), torch.randn(64, 4)
    with memprof.track() as s:
        for i in range(30):
            if style == "data":
                model.zero_grad()
            loss = (model(x[i % 4 * 16:][:16]) - y[:16]).pow(2).mean()
            loss.backward()
            _manual_step(model, style)
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * 30
    assert _warnings(report) == []
    # Detail did not stay on: the first 10 iterations, then watching (with rare periodic looks).
    assert sum(st.detailed for st in report.steps) <= 14


def test_manual_sgd_with_a_summed_loss_tensor_is_found_at_its_line() -> None:
    model = _model()
    with memprof.track() as s:
        total_loss = 0
        for _ in range(20):
            loss = model(torch.randn(16, 32)).pow(2).mean()
            model.zero_grad()
            loss.backward()
            _manual_step(model, "no_grad")
            total_loss += loss  # <accumulates>
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * 20
    assert ("accumulated_tensor", _line("# <accumulates>"), "total_loss") in _warnings(report)


def test_lbfgs_one_iteration_per_step_call() -> None:
    model = _model()
    # history_size: LBFGS's history (optimizer state) full from the first step; a history that
    # fills over many steps is memory that grows at the boundaries (memory_growth) until it is full.
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=8, history_size=4)
    x, y = torch.randn(64, 32), torch.randn(64, 4)
    evaluations = 0
    with memprof.track() as s:
        for _ in range(12):
            def closure() -> torch.Tensor:
                nonlocal evaluations
                evaluations += 1
                opt.zero_grad()
                loss = (model(x) - y).pow(2).mean()
                loss.backward()
                return loss

            opt.step(closure)  # type: ignore[arg-type]
    report = s.report
    assert report is not None
    assert evaluations > 24  # the closure ran several times inside each step
    assert _phases(report) == "t" * 12
    assert _warnings(report) == []


def test_lbfgs_with_a_prediction_after_each_step() -> None:
    """PyTorch's time-sequence example: a no_grad prediction after each step is part of the next."""
    model = _model()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=4, history_size=4)
    x, y = torch.randn(64, 32), torch.randn(64, 4)
    with memprof.track() as s:
        for _ in range(12):
            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = (model(x) - y).pow(2).mean()
                loss.backward()
                return loss

            opt.step(closure)  # type: ignore[arg-type]
            with torch.no_grad():
                model(torch.randn(8, 32))
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * 12 + "e"  # the last prediction: an inference call of its own
    assert _warnings(report) == []


class _Policy(nn.Module):
    def __init__(self, critic: bool = False) -> None:
        super().__init__()
        self.body = nn.Linear(4, 128)
        self.pi = nn.Linear(128, 2)
        self.v = nn.Linear(128, 1) if critic else None
        self.saved: list[Any] = []
        self.rewards: list[float] = []

    def forward(self, x: torch.Tensor) -> Any:
        h = torch.relu(self.body(x))
        probs = torch.softmax(self.pi(h), dim=-1)
        return (probs, self.v(h)) if self.v is not None else probs


EPISODE_LENGTHS = [20, 26, 18, 31, 22, 17, 28, 24, 19, 30, 21, 27, 25, 18]  # not monotone


def _returns(rewards: list[float]) -> torch.Tensor:
    out, r = [], 0.0
    for x in reversed(rewards):
        r = x + 0.99 * r
        out.insert(0, r)
    t = torch.tensor(out)
    return (t - t.mean()) / (t.std() + 1e-6)


def test_reinforce_episodes_are_iterations() -> None:
    """PyTorch's REINFORCE example: log-probabilities kept per environment step, one backward and
    one step at the episode's end, the list cleared after it."""
    torch.manual_seed(0)
    policy = _Policy()
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)

    def select_action(state: torch.Tensor) -> int:
        probs = policy(state)
        m = torch.distributions.Categorical(probs)
        action = m.sample()
        policy.saved.append(m.log_prob(action))
        return int(action.item())

    def finish_episode() -> None:
        returns = _returns(policy.rewards)
        policy_loss = torch.cat([-lp * r for lp, r in zip(policy.saved, returns, strict=True)]).sum()
        opt.zero_grad()
        policy_loss.backward()
        opt.step()
        del policy.rewards[:]
        del policy.saved[:]

    with memprof.track() as s:
        for length in EPISODE_LENGTHS * 2:
            for _ in range(length):
                select_action(torch.randn(1, 4))
                policy.rewards.append(1.0)
            finish_episode()
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * len(EPISODE_LENGTHS) * 2
    assert _warnings(report) == []


def test_actor_critic_with_a_no_grad_bootstrap_value_is_one_iteration_per_episode() -> None:
    """Saved (log-prob, value) pairs per step, and a no_grad call of the same model at another line
    inside the episode: not an evaluation while the episode's graphs await their backward."""
    torch.manual_seed(0)
    model = _Policy(critic=True)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    with memprof.track() as s:
        for length in EPISODE_LENGTHS:
            state = torch.randn(1, 4)
            for _ in range(length):
                probs, value = model(state)
                m = torch.distributions.Categorical(probs)
                action = m.sample()
                model.saved.append((m.log_prob(action), value))
                state = torch.randn(1, 4)
                with torch.no_grad():
                    _, next_value = model(state)
                model.rewards.append(1.0 + 0.0 * float(next_value))
            returns = _returns(model.rewards)
            policy_losses, value_losses = [], []
            for (log_prob, value), r in zip(model.saved, returns, strict=True):
                policy_losses.append(-log_prob * (r - value.item()))
                value_losses.append(nn.functional.smooth_l1_loss(value.squeeze(), r))
            opt.zero_grad()
            loss = torch.stack(policy_losses).sum() + torch.stack(value_losses).sum()
            loss.backward()
            opt.step()
            del model.rewards[:]
            del model.saved[:]
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * len(EPISODE_LENGTHS)
    assert _warnings(report) == []


def test_a_loss_summed_over_chunks_is_one_iteration_per_step() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with memprof.track() as s:
        for _ in range(16):
            x = torch.randn(64, 32)
            opt.zero_grad()
            total = torch.zeros(())
            for chunk in x.chunk(8):
                total = total + model(chunk).pow(2).mean()
            total.backward()
            opt.step()
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * 16
    assert _warnings(report) == []


def test_truncated_backprop_over_windows_inside_one_step() -> None:
    torch.manual_seed(0)
    rnn, head = nn.GRU(8, 32), nn.Linear(32, 8)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()])
    data = torch.randn(200, 4, 8)
    with memprof.track() as s:
        h = torch.zeros(1, 4, 32)
        for start in range(0, 180, 20):
            opt.zero_grad()
            loss = torch.zeros(())
            for k in range(start, start + 20, 5):  # 4 windows, one backward through them
                out, h = rnn(data[k:k + 5], h)
                loss = loss + (head(out) - data[k + 1:k + 6]).pow(2).mean()
            loss.backward()
            opt.step()
            h = h.detach()
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * 9
    assert _warnings(report) == []


def test_gradient_accumulation_is_one_iteration_per_optimizer_step() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with memprof.track() as s:
        for i in range(48):
            loss = model(torch.randn(16, 32)).pow(2).mean() / 4
            loss.backward()
            if (i + 1) % 4 == 0:
                opt.step()
                opt.zero_grad()
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * 12
    assert _warnings(report) == []


def test_a_hidden_state_carried_with_retain_graph_is_found() -> None:
    """The word-language model's bug: the hidden state never detached, backward with
    retain_graph=True, weights updated through .data (no optimizer)."""
    torch.manual_seed(0)
    rnn = nn.RNN(8, 256)
    with memprof.track() as s:
        hidden = torch.zeros(1, 4, 256)
        for _ in range(12):
            rnn.zero_grad()
            output, hidden = rnn(torch.randn(10, 4, 8), hidden)
            loss = output.pow(2).mean()
            loss.backward(retain_graph=True)
            for p in rnn.parameters():
                p.data.add_(p.grad, alpha=-0.01)
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * 12
    assert "retained_graph" in {kind for kind, _, _ in _warnings(report)}


@pytest.mark.parametrize("no_grad", [True, False])
def test_an_evaluation_loop_is_one_iteration_per_call(no_grad: bool) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with memprof.track() as s:
        for _epoch in range(2):
            for _ in range(12):
                loss = model(torch.randn(16, 32)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.set_grad_enabled(not no_grad):
                for _ in range(6):
                    out = model(torch.randn(64, 32))  # <eval call>
                    float(out.argmax(1).float().mean())
            model.train()
    report = s.report
    assert report is not None
    assert _phases(report) == ("t" * 12 + "e" * 6) * 2
    found = _warnings(report)
    if no_grad:
        assert found == []
    else:
        assert ("missing_no_grad", _line("# <eval call>"), "model") in found


def test_inference_without_eval_mode_drops_its_graphs() -> None:
    """Autograd on, the model left in train(): the dropped graphs make it an inference loop."""
    model = _model()
    with memprof.track() as s:
        labels = []
        for _ in range(10):
            scores = model(torch.randn(64, 32))  # <inference call>
            labels.extend(scores.argmax(1).tolist())
    report = s.report
    assert report is not None
    assert set(_phases(report)) == {"e"}
    assert len(report.steps) >= 8  # the first repeated call waits to see a graph dropped
    assert ("missing_no_grad", _line("# <inference call>"), "model") in _warnings(report)


def test_a_gan_is_one_iteration_per_generator_and_discriminator_step() -> None:
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 16))
    D = nn.Sequential(nn.Linear(16, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    opt_g, opt_d = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    bce = nn.BCEWithLogitsLoss()
    with memprof.track() as s:
        for _ in range(20):
            fake = G(torch.randn(32, 8))
            d_loss = bce(D(torch.randn(32, 16)), torch.ones(32, 1)) + bce(D(fake.detach()), torch.zeros(32, 1))
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = bce(D(fake), torch.ones(32, 1))
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * 20
    assert _warnings(report) == []


def test_a_new_optimizer_takes_over_when_the_first_stops_stepping() -> None:
    """Fine-tuning in two stages, an optimizer per stage (the first still alive)."""
    model = _model()
    first = torch.optim.SGD(model.parameters(), lr=0.01)
    second = torch.optim.Adam(model.parameters(), lr=1e-3)
    with memprof.track() as s:
        for opt in (first, second):
            for _ in range(10):
                loss = model(torch.randn(16, 32)).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    report = s.report
    assert report is not None
    # The second becomes primary at its second step (its first is one iteration with it).
    assert _phases(report) == "t" * 19


def test_tensors_trained_without_a_module_are_iterations_too() -> None:
    """No nn.Module at all: the leaves of the backward's graph are watched for the update."""
    torch.manual_seed(0)
    w = torch.randn(32, 4, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    x, y = torch.randn(64, 32), torch.randn(64, 4)
    backward, grad = torch.autograd.backward, torch.autograd.grad
    with memprof.track() as s:
        assert torch.autograd.backward is not backward  # the session's hook, for its life
        for _ in range(15):
            loss = (x @ w + b - y).pow(2).mean()
            loss.backward()
            with torch.no_grad():
                w -= 0.01 * w.grad
                b -= 0.01 * b.grad
                w.grad.zero_()
                b.grad.zero_()
    assert torch.autograd.backward is backward and torch.autograd.grad is grad
    report = s.report
    assert report is not None
    assert _phases(report) == "t" * 15
