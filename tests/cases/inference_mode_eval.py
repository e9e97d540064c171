"""Careful: training, then evaluation under torch.inference_mode(), detached accumulation."""
import torch
from torch import nn

torch.manual_seed(10)
model = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
train = [(torch.randn(32, 64), torch.randint(0, 3, (32,))) for _ in range(8)]
for epoch in range(2):
    epoch_loss = torch.zeros(())
    for x, y in train:
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        epoch_loss += loss.detach()
    with torch.inference_mode():
        val = sum(nn.functional.cross_entropy(model(x), y) for x, y in train) / len(train)
    print(f"{epoch_loss.item():.3f} {val.item():.3f}")
