"""Careful: each batch's loss summed over chunks (a generator of chunks), one backward and one step per batch."""
import torch
from torch import nn


def chunks(x, y, n):
    for cx, cy in zip(x.chunk(n), y.chunk(n)):
        yield cx, cy


torch.manual_seed(26)
model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
seen = 0.0
for step in range(12):
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    opt.zero_grad()
    loss = 0
    for cx, cy in chunks(x, y, 8):
        loss = loss + nn.functional.cross_entropy(model(cx), cy) / 8
    loss.backward()
    opt.step()
    seen += loss.item()
print(round(seen, 3))
