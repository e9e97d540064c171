"""memprof's pytest markers on a training step: `pytest examples/pytest_memory` (add `--memprof` for
the tests with the largest peaks). The second test fails on purpose: it keeps every step's graph."""

import pytest
import torch
from torch import nn


def _model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10))
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


@pytest.mark.limit_memory("24MiB")
def test_a_training_step_fits_its_budget() -> None:
    model, opt = _model()
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(64, 128)), torch.randint(0, 10, (64,)))
        loss.backward()
        opt.step()


@pytest.mark.no_memory_findings
def test_the_loop_keeps_no_graph() -> None:
    model, opt = _model()
    total = 0.0
    for _ in range(6):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(64, 128)), torch.randint(0, 10, (64,)))
        loss.backward()
        opt.step()
        total = total + loss  # memprof: "total accumulates the autograd history ..."; `loss.item()` fixes it
    assert float(total) > 0
