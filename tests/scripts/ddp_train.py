"""A tiny DistributedDataParallel job on CPU (gloo); rank 1 keeps a list of losses with their graphs."""
import os

import torch
import torch.distributed as dist
from torch import nn

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(rank)
model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 4)))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
kept = []
for step in range(6):
    x = torch.randn(16 * (rank + 1), 32)
    out = model(x)
    loss = out.pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    if rank == 1:
        kept.append(out)
print(f"rank {rank} world {dist.get_world_size()} local {os.environ['LOCAL_RANK']} done")
dist.destroy_process_group()
