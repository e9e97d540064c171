"""Careful: gradient accumulation over micro-batches, metrics as Python floats."""
import torch
from torch import nn

torch.manual_seed(7)
model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
accum = 4
seen_loss = 0.0
for step in range(8):
    opt.zero_grad(set_to_none=True)
    for micro in range(accum):
        x = torch.randn(16, 128)
        y = torch.randint(0, 10, (16,))
        loss = nn.functional.cross_entropy(model(x), y) / accum
        loss.backward()
        seen_loss += loss.item()
    opt.step()
print(round(seen_loss, 3))
