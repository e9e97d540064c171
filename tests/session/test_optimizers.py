"""What the run's optimizers hold: each its own state, LBFGS's history included."""

from __future__ import annotations

import torch
from torch import nn

import memprof
from memprof.session.optimizers import state_tensors


def _lbfgs_run(steps: int) -> tuple[nn.Module, torch.optim.LBFGS]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 8))
    opt = torch.optim.LBFGS(model.parameters(), history_size=5, max_iter=4)
    x, y = torch.randn(16, 64), torch.randn(16, 8)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return model, opt


def test_lbfgs_history_lists_are_state() -> None:
    model, opt = _lbfgs_run(2)
    held = state_tensors(opt)
    [state] = opt.state.values()
    assert state["old_dirs"] and all(any(t is h for h in held) for t in state["old_dirs"] + state["old_stps"])
    assert any(t is state["d"] for t in held) and any(t is state["prev_flat_grad"] for t in held)


def test_the_report_counts_lbfgs_history_as_optimizer_state() -> None:
    with memprof.track() as s:
        model, opt = _lbfgs_run(4)
    flat = sum(p.numel() for p in model.parameters()) * 4
    [state] = opt.state.values()
    history = len(state["old_dirs"]) + len(state["old_stps"])
    report = s.report
    assert report is not None and report.advisor is not None
    figures = report.advisor.figures["optimizer"]
    assert figures["LBFGS"]["state_bytes"] >= (history + 2) * flat  # the history, d and prev_flat_grad
    assert report.breakdown_at_peak.optimizer_state >= history * flat


def test_two_adams_have_their_own_key_and_state() -> None:
    torch.manual_seed(0)
    gen, disc = nn.Linear(32, 64), nn.Linear(64, 512)
    opt_g, opt_d = torch.optim.Adam(gen.parameters()), torch.optim.Adam(disc.parameters())
    with memprof.track() as s:
        for _ in range(3):
            z = torch.randn(8, 32)
            opt_d.zero_grad()
            disc(gen(z).detach()).mean().backward()
            opt_d.step()
            opt_g.zero_grad()
            disc(gen(z)).mean().backward()
            opt_g.step()
    report = s.report
    assert report is not None and report.advisor is not None
    figures = report.advisor.figures["optimizer"]
    by_state = sorted(f["state_bytes"] for f in figures.values())
    assert set(figures) == {"Adam #1", "Adam #2"}
    own = [2 * sum(p.untyped_storage().nbytes() for p in m.parameters()) for m in (gen, disc)]
    assert by_state == sorted(own)
