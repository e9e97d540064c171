"""A Trainer object that keeps a running sum of losses on itself, with the graph attached."""
import torch
from torch import nn


class Trainer:
    def __init__(self, steps):
        self.steps = steps
        self.net = nn.Sequential(nn.Linear(128, 256), nn.SiLU(), nn.Linear(256, 8))
        self.optim = torch.optim.SGD(self.net.parameters(), lr=0.01)
        self.epoch_loss = torch.zeros(())

    def fit(self):
        i = 0
        while i < self.steps:
            inputs = torch.randn(32, 128)
            target = torch.randn(32, 8)
            self.optim.zero_grad()
            err = ((self.net(inputs) - target) ** 2).mean()
            err.backward()
            self.optim.step()
            self.epoch_loss = self.epoch_loss + err
            i += 1
        return float(self.epoch_loss) / self.steps


if __name__ == "__main__":
    torch.manual_seed(1)
    print(round(Trainer(10).fit(), 4))
