import sys

import torch

print("module argv:", sys.argv[1:], "name:", __name__)
w = torch.ones(10, requires_grad=True)
opt = torch.optim.SGD([w], lr=0.1)
for _ in range(3):
    (w * w).sum().backward()
    opt.step()
    opt.zero_grad()
print(round(float(w.sum()), 4))
