"""Careful: truncated backprop where one step backpropagates through several windows of an LSTM,
the hidden state detached between steps (a class holding the state)."""
import torch
from torch import nn


class Forecaster(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(8, 128)
        self.head = nn.Linear(128, 8)

    def forward(self, x, state):
        out, state = self.lstm(x, state)
        return self.head(out), state


class Runner:
    def __init__(self):
        self.model = Forecaster()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.state = None

    def detach_state(self):
        self.state = tuple(s.detach() for s in self.state)

    def step(self, series, windows, width):
        self.opt.zero_grad()
        loss = 0
        for w in range(windows):
            part = series[w * width:(w + 1) * width + 1]
            pred, self.state = self.model(part[:-1], self.state)
            loss = loss + nn.functional.mse_loss(pred, part[1:])
        loss.backward()
        self.opt.step()
        self.detach_state()
        return loss.item()


torch.manual_seed(27)
runner = Runner()
series = torch.randn(1300, 16, 8)
total = 0.0
for start in range(0, 1200, 100):
    total += runner.step(series[start:start + 101], windows=4, width=25)
print(round(total, 3))
