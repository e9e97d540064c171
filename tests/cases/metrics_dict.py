"""Per-metric lists in a dict; one of them receives the loss tensor itself."""
from collections import defaultdict

import torch
from torch import nn


def run(steps):
    model = nn.Sequential(nn.Linear(50, 600), nn.Sigmoid(), nn.Linear(600, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, nesterov=True, momentum=0.5)
    metrics = defaultdict(list)
    step = 0
    while step < steps:
        x = torch.randn(30, 50)
        y = torch.randint(0, 3, (30,))
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        metrics["acc"].append((logits.argmax(1) == y).float().mean().item())
        metrics["loss"].append(loss)
        step += 1
    return metrics


if __name__ == "__main__":
    torch.manual_seed(14)
    m = run(10)
    print(len(m["loss"]), round(sum(m["acc"]) / len(m["acc"]), 3))
