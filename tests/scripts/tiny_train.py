"""A tiny training loop with knobs for the CLI tests."""
import argparse
import os
import sys
import time

import torch
from torch import nn

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=4)
p.add_argument("--exit", type=int, default=None)
p.add_argument("--raise-error", action="store_true")
p.add_argument("--echo", nargs="*", default=[])
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--pidfile", default=None)
a, _unknown = p.parse_known_args()
print("argv:", sys.argv[1:])
print("echo:", a.echo)
print("path0 is script dir:", sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
print("name:", __name__)
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(a.steps):
    x = torch.randn(8, 16)
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    print(f"step {step} loss {loss.item():.5f}")
if a.pidfile:
    with open(a.pidfile, "w") as fh:
        fh.write(str(os.getpid()))
if a.sleep:
    time.sleep(a.sleep)
sys.stderr.write("to stderr\n")
if a.raise_error:
    raise ValueError("boom")
if a.exit is not None:
    sys.exit(a.exit)
