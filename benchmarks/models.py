"""The benchmark models: one compute-bound, one matrix-multiply bound, one dominated by per-op overhead;
and three loops off the canonical one, on small per-op-bound models.

:meth:`Workload.make` builds a model, an Adam optimizer and one fixed batch, and returns a
:class:`Trainer` whose ``step()`` is one training step as a user's loop writes it: ``zero_grad``,
forward, loss, backward, ``step``. The other loops (:data:`LOOPS`, each a :class:`Workload` whose
``trainer`` says how it trains):

- ``manual_sgd``: the tiny MLP, weights updated by hand as PyTorch's regression example does
  (``model.zero_grad()``, backward, ``p.data.add_(p.grad, alpha=-lr)``): no optimizer at all;
- ``lbfgs``: the tiny MLP under ``torch.optim.LBFGS`` with a closure, 4 evaluations (forward and
  backward) inside each ``step()``;
- ``rl``: REINFORCE: a policy called once per environment step with autograd on (16 steps an
  episode), its log-probabilities kept in a list, one backward and one Adam step at the episode's
  end. A ``step()`` is one episode.
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


def policy() -> nn.Module:
    """A tiny policy over 2 actions from a 4-number state (CartPole's shape)."""
    return nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2), nn.Softmax(dim=-1))


@dataclass
class Trainer:
    model: nn.Module
    opt: torch.optim.Optimizer | None
    x: torch.Tensor
    y: torch.Tensor

    def step(self) -> None:
        opt = self.opt
        assert opt is not None
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        opt.step()


@dataclass
class ManualSGDTrainer(Trainer):
    """No optimizer: gradients zeroed through the model, weights updated through ``.data``."""

    lr: float = 1e-3

    def step(self) -> None:
        model = self.model
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(self.x), self.y)
        loss.backward()
        for p in model.parameters():
            if p.grad is not None:
                p.data.add_(p.grad, alpha=-self.lr)


@dataclass
class LBFGSTrainer(Trainer):
    """``optimizer.step(closure)``: the closure's forward and backward run inside the step."""

    def step(self) -> None:
        opt, model, x, y = self.opt, self.model, self.x, self.y
        assert opt is not None

        def closure() -> float:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss  # type: ignore[return-value]  # LBFGS takes the loss tensor

        opt.step(closure)


@dataclass
class ReinforceTrainer(Trainer):
    """One episode: the policy called per environment step (``x`` holds the states), an action
    sampled, its log-probability kept; at the end, the returns-weighted loss, backward, step."""

    def step(self) -> None:
        opt, policy, states, returns = self.opt, self.model, self.x, self.y
        assert opt is not None
        log_probs = []
        for t in range(states.shape[0]):
            probs = policy(states[t:t + 1])
            action = torch.multinomial(probs, 1)
            log_probs.append(probs.gather(1, action).log())
        loss = -(torch.cat(log_probs).squeeze(1) * returns).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        del log_probs[:]


@dataclass
class Workload:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    description: str
    classes: int = 10
    trainer: str = "adam"  # adam, manual_sgd, lbfgs, rl

    def make(self, device: str = "cpu", seed: int = 0, foreach: bool | None = None) -> Trainer:
        """A model, its optimizer (PyTorch's default implementation for the device) and one batch."""
        torch.manual_seed(seed)
        model = self.build().to(device)
        x = torch.randn(*self.input_shape, device=device)
        y = torch.randint(0, self.classes, (self.input_shape[0],), device=device)
        if self.trainer == "manual_sgd":
            return ManualSGDTrainer(model, None, x, y)
        if self.trainer == "lbfgs":
            lbfgs = torch.optim.LBFGS(model.parameters(), lr=0.05, max_iter=4, history_size=10,
                                      tolerance_grad=0.0, tolerance_change=0.0)  # always 4 evaluations
            return LBFGSTrainer(model, lbfgs, x, y)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=foreach)
        if self.trainer == "rl":
            returns = torch.linspace(1.0, 0.1, self.input_shape[0], device=device)
            return ReinforceTrainer(model, opt, x, returns)
        return Trainer(model, opt, x, y)


WORKLOADS: dict[str, Workload] = {
    "cnn": Workload("cnn", cnn, (16, 3, 32, 32), "6 conv-BN-ReLU blocks of 64 to 256 channels, batch 16 of 3x32x32"),
    "wide_mlp": Workload("wide_mlp", wide_mlp, (128, 512), "512-1024-1024-1024-10 MLP, batch 128"),
    "tiny_mlp": Workload("tiny_mlp", tiny_mlp, (16, 32), "32-64-64-10 MLP, batch 16"),
}
# Loops off the canonical one, run on request (``overhead.py --models manual_sgd,lbfgs,rl``).
LOOPS: dict[str, Workload] = {
    "manual_sgd": Workload("manual_sgd", tiny_mlp, (16, 32), "the tiny MLP, weights updated by hand "
                           "(model.zero_grad(), backward, p.data.add_(p.grad, alpha=-lr)), no optimizer",
                           trainer="manual_sgd"),
    "lbfgs": Workload("lbfgs", tiny_mlp, (16, 32), "the tiny MLP under LBFGS with a closure, 4 forward and "
                      "backward passes per step()", trainer="lbfgs"),
    "rl": Workload("rl", policy, (16, 4), "REINFORCE: a 4-64-2 policy called per environment step with "
                   "autograd on, log-probabilities kept, one backward and Adam step per 16-step episode "
                   "(a step() is one episode)", trainer="rl"),
}
ALL_WORKLOADS: dict[str, Workload] = {**WORKLOADS, **LOOPS}
