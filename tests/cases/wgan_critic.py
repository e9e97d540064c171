"""Careful: a WGAN-style loop with two optimizers, the critic stepped three times per generator
step (nested loops), metrics kept as floats."""
import torch
from torch import nn

torch.manual_seed(30)
G = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 32))
C = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 1))
opt_g = torch.optim.RMSprop(G.parameters(), lr=5e-5)
opt_c = torch.optim.RMSprop(C.parameters(), lr=5e-5)
history = {"critic": [], "gen": []}
for it in range(10):
    for _ in range(3):
        real = torch.randn(64, 32)
        with torch.no_grad():
            fake = G(torch.randn(64, 16))
        c_loss = C(fake).mean() - C(real).mean()
        opt_c.zero_grad()
        c_loss.backward()
        opt_c.step()
        for p in C.parameters():
            p.data.clamp_(-0.01, 0.01)
        history["critic"].append(c_loss.item())
    g_loss = -C(G(torch.randn(64, 16))).mean()
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    history["gen"].append(g_loss.item())
print(len(history["critic"]), len(history["gen"]))
