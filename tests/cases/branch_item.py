"""Sums the epoch loss in two places: the branch that runs sums tensors, the else that never runs sums numbers."""
import torch
from torch import nn


class Trainer:
    def __init__(self, track_tensors=True):
        torch.manual_seed(3)
        self.model = nn.Sequential(nn.Linear(40, 160), nn.ReLU(), nn.Linear(160, 1))
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.track_tensors = track_tensors

    def fit(self, steps):
        epoch_loss = 0.0
        for step in range(steps):
            x, y = torch.randn(32, 40), torch.randn(32, 1)
            loss = nn.functional.mse_loss(self.model(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            if self.track_tensors:
                epoch_loss = epoch_loss + loss * len(x)
            else:
                epoch_loss += loss.item() * len(x)
        return epoch_loss


if __name__ == "__main__":
    total = Trainer().fit(12)
    print(f"{float(total):.3f}")
