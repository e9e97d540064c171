"""Careful: a big tensor from the previous step is rebound before this step's peak."""
import torch
from torch import nn

torch.manual_seed(11)
model = nn.Sequential(nn.Embedding(4096, 64), nn.Linear(64, 4096))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
logits = None
for step in range(6):
    tokens = torch.randint(0, 4096, (16, 64))
    logits = model(tokens)
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
print(logits.shape[0])
