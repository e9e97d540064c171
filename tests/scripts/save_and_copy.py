"""A training loop that saves its model whole and keeps an EMA copy, as many real scripts do:
``torch.save(model)``, ``copy.deepcopy(model)`` and ``AveragedModel`` inside the loop. Its stdout
must be the same under ``memprof run`` as under ``python``."""

import copy
import os
import pickle
import sys

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class Net(nn.Module):  # a class of the script's own: pickled by reference to __main__.Net
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 3))

    def forward(self, x):
        return self.body(x)


out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(0)
model = Net()
opt = torch.optim.Adam(model.parameters(), lr=0.01)
ema = None
best = None
steps = 40
for step in range(1, steps + 1):
    x = torch.randn(8, 12)
    y = torch.randint(0, 3, (8,))
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step == 15:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))  # made after training started
    if ema is not None:
        ema.update_parameters(model)
    if step % 10 == 0:
        best = copy.deepcopy(model)
        torch.save(model, os.path.join(out_dir, "model.pt"))
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step},
                   os.path.join(out_dir, "ckpt.pt"))
        print(f"step {step} loss {loss.item():.5f}")
assert ema is not None and best is not None
probe = torch.randn(4, 12)
loaded = torch.load(os.path.join(out_dir, "model.pt"), weights_only=False)
ckpt = torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=True)
restored = Net()
restored.load_state_dict(ckpt["model"])
with torch.no_grad():
    for name, m in (("model", model), ("best", best), ("loaded", loaded), ("restored", restored),
                    ("ema", ema), ("unpickled", pickle.loads(pickle.dumps(model)))):
        print(name, [round(v, 5) for v in m(probe).sum(1).tolist()])
print(f"saved {ckpt['step']}")
