"""One name, assigned in several places: reset per epoch, summed as a number in a branch that never
runs, summed as a tensor in the one that does (the variable is even called `loss`)."""
import torch
from torch import nn


def fit(model, opt, batches, epochs, clip=None):
    history = []
    for epoch in range(epochs):
        loss = 0.0
        for x, y in batches:
            opt.zero_grad()
            batch_loss = nn.functional.mse_loss(model(x), y)
            batch_loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
                loss = loss + batch_loss.item()
            else:
                loss += batch_loss
            opt.step()
        history.append(float(loss) / len(batches))
    return history


def main():
    torch.manual_seed(29)
    model = nn.Sequential(nn.Linear(16, 64), nn.SiLU(), nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = [(torch.randn(32, 16), torch.randn(32, 1)) for _ in range(8)]
    print([round(v, 3) for v in fit(model, opt, batches, epochs=2)])


if __name__ == "__main__":
    main()
