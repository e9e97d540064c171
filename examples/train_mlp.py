"""A small classifier trained the way many first scripts are: it works, and it wastes memory.

    python examples/train_mlp.py                 # plain
    memprof run examples/train_mlp.py            # what memprof finds
    python examples/train_mlp.py --careful       # the same run with the fixes memprof suggests
"""
import argparse

import torch
from torch import nn


def make_data(n, generator):
    x = torch.randn(n, 256, generator=generator)
    y = (x[:, :10].sum(dim=1) > 0).long()
    return x, y


def evaluate(model, x, y, batch_size, careful):
    model.eval()
    correct = 0
    with torch.no_grad() if careful else torch.enable_grad():
        for i in range(0, len(x), batch_size):
            logits = model(x[i:i + batch_size])
            correct += (logits.argmax(dim=1) == y[i:i + batch_size]).sum().item()
    model.train()
    return correct / len(x)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--careful", action="store_true", help="apply memprof's fixes")
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y = make_data(4096, g)
    val_x, val_y = make_data(1024, g)
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    total_loss = 0.0
    for _ in range(a.steps):
        idx = torch.randint(0, len(x), (a.batch_size,), generator=g)
        xb, yb = x[idx], y[idx]
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total_loss += loss.item() if a.careful else loss
    print(f"mean loss {float(total_loss) / a.steps:.4f}")
    print(f"val accuracy {evaluate(model, val_x, val_y, 256, a.careful):.3f}")


if __name__ == "__main__":
    main()
