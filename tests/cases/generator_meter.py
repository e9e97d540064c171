"""A coroutine keeps the running loss: it is sent the loss tensor and sums it, graph and all."""
import torch
from torch import nn


def running_mean():
    total, count = 0.0, 0
    while True:
        value = yield (total / count if count else 0.0)
        total = total + value
        count += 1


def main():
    torch.manual_seed(13)
    model = nn.Sequential(nn.Linear(20, 80), nn.ReLU(), nn.Linear(80, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    meter = running_mean()
    next(meter)
    for _ in range(12):
        x = torch.randn(24, 20)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mean = meter.send(loss)
    print(f"{float(mean):.4f}")


if __name__ == "__main__":
    main()
