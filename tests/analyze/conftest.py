"""Fixtures of the detectors' unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _torch_warmed_up() -> Iterator[None]:
    """torch's first backward and optimizer step set up its machinery (about a second): do it once,
    before the first test, so each test's time is its own."""
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    yield
