"""An AverageMeter held by a trainer sums raw loss tensors: two objects deep, in another method."""
import torch
from torch import nn


class AverageMeter:
    def __init__(self):
        self.total = 0.0
        self.count = 0

    def update(self, value, n=1):
        self.total += value * n
        self.count += n


class Trainer:
    def __init__(self):
        self.model = nn.Sequential(nn.Linear(96, 384), nn.ReLU(), nn.Linear(384, 1))
        self.opt = torch.optim.Adagrad(self.model.parameters(), lr=0.01)
        self.meter = AverageMeter()

    def step(self, x, y):
        pred = self.model(x).squeeze(1)
        loss = nn.functional.mse_loss(pred, y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.meter.update(loss, len(x))


def main():
    torch.manual_seed(12)
    trainer = Trainer()
    for _ in range(10):
        trainer.step(torch.randn(24, 96), torch.randn(24))
    print(f"{float(trainer.meter.total) / trainer.meter.count:.4f}")


if __name__ == "__main__":
    main()
