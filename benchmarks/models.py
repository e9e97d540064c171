"""The benchmark models: one compute-bound, one matrix-multiply bound, one dominated by per-op overhead.

:meth:`Workload.make` builds a model, an Adam optimizer and one fixed batch, and returns a
:class:`Trainer` whose ``step()`` is one training step as a user's loop writes it: ``zero_grad``,
forward, loss, backward, ``step``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


def cnn() -> nn.Module:
    """A VGG-like CNN (64 to 256 channels) on 32x32 images: convolution-bound."""

    def block(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    return nn.Sequential(
        block(3, 64), block(64, 64), nn.MaxPool2d(2),
        block(64, 128), block(128, 128), nn.MaxPool2d(2),
        block(128, 256), block(256, 256), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    )


def wide_mlp() -> nn.Module:
    """Wide linear layers: matrix-multiply and memory-bandwidth bound."""
    return nn.Sequential(
        nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
        nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10),
    )


def tiny_mlp() -> nn.Module:
    """A tiny MLP: every op is cheap, so the step is per-op overhead, as a GPU step is on the host."""
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@dataclass
class Trainer:
    model: nn.Module
    opt: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor

    def step(self) -> None:
        opt = self.opt
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        opt.step()


@dataclass
class Workload:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    description: str
    classes: int = 10

    def make(self, device: str = "cpu", seed: int = 0, foreach: bool | None = None) -> Trainer:
        """A model, its optimizer (PyTorch's default implementation for the device) and one batch."""
        torch.manual_seed(seed)
        model = self.build().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=foreach)
        x = torch.randn(*self.input_shape, device=device)
        y = torch.randint(0, self.classes, (self.input_shape[0],), device=device)
        return Trainer(model, opt, x, y)


WORKLOADS: dict[str, Workload] = {
    "cnn": Workload("cnn", cnn, (16, 3, 32, 32), "6 conv-BN-ReLU blocks of 64 to 256 channels, batch 16 of 3x32x32"),
    "wide_mlp": Workload("wide_mlp", wide_mlp, (128, 512), "512-1024-1024-1024-10 MLP, batch 128"),
    "tiny_mlp": Workload("tiny_mlp", tiny_mlp, (16, 32), "32-64-64-10 MLP, batch 16"),
}
