"""Careful: truncated backprop through time, the hidden state detached at each window."""
import torch
from torch import nn

torch.manual_seed(8)
rnn = nn.GRU(16, 128, batch_first=True)
readout = nn.Linear(128, 16)
params = list(rnn.parameters()) + list(readout.parameters())
opt = torch.optim.Adam(params, lr=1e-3)
stream = torch.randn(8, 400, 16)
h = torch.zeros(1, 8, 128)
total = torch.zeros(())
for start in range(0, 400 - 41, 40):
    chunk = stream[:, start:start + 40]
    target = stream[:, start + 1:start + 41]
    out, h = rnn(chunk, h)
    loss = nn.functional.mse_loss(readout(out), target)
    opt.zero_grad()
    loss.backward()
    opt.step()
    h = h.detach()
    total += loss.detach()
print(f"{total.item():.3f}")
