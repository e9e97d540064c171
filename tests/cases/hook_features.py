"""A forward hook collects a layer's features for later analysis, graph and all."""
import torch
from torch import nn

torch.manual_seed(13)
net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
features = []
net[2].register_forward_hook(lambda module, inputs, output: features.append(output))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
for _ in range(8):
    images = torch.randn(16, 3, 24, 24)
    labels = torch.randint(0, 10, (16,))
    loss = nn.functional.cross_entropy(net(images), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
print(len(features))
