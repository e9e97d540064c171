"""Two ranks of DistributedDataParallel on the CPU (gloo), launched by torchrun: a DistributedSampler,
all-reduced gradients, rank 0 prints."""

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = DistributedDataParallel(nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 4)))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
x, y = torch.randn(1024, 32), torch.randint(0, 4, (1024,))
sampler = DistributedSampler(TensorDataset(x, y), shuffle=True, seed=0)
loader = DataLoader(TensorDataset(x, y), batch_size=32, sampler=sampler)
for epoch in range(2):
    sampler.set_epoch(epoch)
    total = 0.0
    for xb, yb in loader:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        total += loss.item()
    if rank == 0:
        print(f"epoch {epoch} loss {total / len(loader):.4f} world {os.environ['WORLD_SIZE']}")
dist.barrier()  # both ranks done before the group goes
dist.destroy_process_group()
