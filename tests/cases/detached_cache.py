"""Caches each step's embeddings, detached, in a dict keyed by step: it is never trimmed."""
import torch
from torch import nn


def main():
    torch.manual_seed(19)
    encoder = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512))
    head = nn.Linear(512, 8)
    opt = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=1e-3)
    cache = {}
    for step in range(12):
        x, y = torch.randn(96, 64), torch.randint(0, 8, (96,))
        emb = encoder(x)
        loss = nn.functional.cross_entropy(head(emb), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cache[step] = emb.detach()
    print(len(cache))


if __name__ == "__main__":
    main()
