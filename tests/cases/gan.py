"""Careful: a GAN step with the generator's output detached for the discriminator update."""
import torch
from torch import nn

torch.manual_seed(9)
G = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 64))
D = nn.Sequential(nn.Linear(64, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1))
opt_d = torch.optim.Adam(D.parameters(), lr=2e-4)
opt_g = torch.optim.Adam(G.parameters(), lr=2e-4)
bce = nn.BCEWithLogitsLoss()
d_losses, g_losses = [], []
for step in range(10):
    real = torch.randn(64, 64)
    fake = G(torch.randn(64, 32))
    d_loss = bce(D(real), torch.ones(64, 1)) + bce(D(fake.detach()), torch.zeros(64, 1))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    g_loss = bce(D(fake), torch.ones(64, 1))
    opt_g.zero_grad()
    g_loss.backward()
    opt_g.step()
    d_losses.append(d_loss.item())
    g_losses.append(g_loss.detach())
print(f"{sum(d_losses):.2f} {torch.stack(g_losses).sum().item():.2f}")
