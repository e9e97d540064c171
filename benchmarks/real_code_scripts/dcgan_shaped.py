"""A DCGAN-shaped loop (as PyTorch's dcgan example trains): a generator and a discriminator, two Adam
optimizers, the discriminator's step on real and detached fake images, then the generator's step."""

import torch
from torch import nn

torch.manual_seed(0)
nz = 16
G = nn.Sequential(nn.ConvTranspose2d(nz, 64, 4, 1, 0, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
                  nn.ConvTranspose2d(64, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(True),
                  nn.ConvTranspose2d(32, 3, 4, 2, 1, bias=False), nn.Tanh())
D = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
                  nn.Conv2d(32, 64, 4, 2, 1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2, True),
                  nn.Conv2d(64, 1, 4, 1, 0, bias=False), nn.Sigmoid())
criterion = nn.BCELoss()
optD = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
optG = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
fixed_noise = torch.randn(8, nz, 1, 1)
images = torch.rand(256, 3, 16, 16) * 2 - 1

for i in range(16):
    real = images[(i * 16) % 256:(i * 16) % 256 + 16]
    D.zero_grad()
    label = torch.full((real.size(0),), 1.0)
    errD_real = criterion(D(real).view(-1), label)
    errD_real.backward()
    noise = torch.randn(real.size(0), nz, 1, 1)
    fake = G(noise)
    label.fill_(0.0)
    errD_fake = criterion(D(fake.detach()).view(-1), label)
    errD_fake.backward()
    optD.step()
    G.zero_grad()
    label.fill_(1.0)
    errG = criterion(D(fake).view(-1), label)
    errG.backward()
    optG.step()
    if i % 4 == 3:
        print(f"[{i + 1}/16] Loss_D {(errD_real + errD_fake).item():.4f} Loss_G {errG.item():.4f}")
with torch.no_grad():
    print(f"fixed sample mean {G(fixed_noise).mean().item():.4f}")
