"""Trains on several tasks in turn; each task's loss tensor is summed into a dict in a nested loop."""
import torch
from torch import nn


def train_round(model, opt, tasks, totals):
    for name, batches in tasks.items():
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            totals[name] += loss


def main():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(30, 120), nn.Tanh(), nn.Linear(120, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tasks = {t: [(torch.randn(16, 30), torch.randint(0, 3, (16,))) for _ in range(3)] for t in ("a", "b")}
    totals = {name: 0.0 for name in tasks}
    for _ in range(3):
        train_round(model, opt, tasks, totals)
    print({k: round(float(v), 2) for k, v in totals.items()})


if __name__ == "__main__":
    main()
