"""Caches each step's embeddings in a dict keyed by step, graph and all."""
import torch
from torch import nn

torch.manual_seed(2)
encoder = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512))
head = nn.Linear(512, 4)
params = list(encoder.parameters()) + list(head.parameters())
opt = torch.optim.Adam(params, lr=1e-3)
cache = {}
for step in range(10):
    x = torch.randn(48, 64)
    y = torch.randint(0, 4, (48,))
    emb = encoder(x)
    loss = nn.functional.cross_entropy(head(emb), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    cache[step] = emb
print(len(cache))
