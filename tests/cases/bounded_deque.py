"""Keeps the last few batches' detached embeddings in a bounded deque: memory stays flat."""
from collections import deque

import torch
from torch import nn


def main():
    torch.manual_seed(23)
    encoder = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512))
    head = nn.Linear(512, 8)
    opt = torch.optim.Adam(list(encoder.parameters()) + list(head.parameters()), lr=1e-3)
    recent = deque(maxlen=6)
    for step in range(14):
        x, y = torch.randn(96, 64), torch.randint(0, 8, (96,))
        emb = encoder(x)
        loss = nn.functional.cross_entropy(head(emb), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        recent.append(emb.detach())
    print(len(recent), tuple(torch.cat(list(recent)).shape))


if __name__ == "__main__":
    main()
