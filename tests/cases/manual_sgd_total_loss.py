"""PyTorch's regression example, with the epoch's loss summed as a tensor: the graph of every
batch kept alive by total_loss."""
import torch
from torch import nn

POLY_DEGREE = 4
torch.manual_seed(22)
W_target = torch.randn(POLY_DEGREE, 1) * 5
b_target = torch.randn(1) * 5


def make_features(x):
    x = x.unsqueeze(1)
    return torch.cat([x ** i for i in range(1, POLY_DEGREE + 1)], 1)


def get_batch(batch_size=64):
    random = torch.randn(batch_size)
    x = make_features(random)
    return x, x.mm(W_target) + b_target.item()


fc = nn.Sequential(nn.Linear(POLY_DEGREE, 512), nn.ReLU(), nn.Linear(512, 1))
for epoch in range(2):
    total_loss = 0
    for batch_idx in range(10):
        batch_x, batch_y = get_batch()
        fc.zero_grad()
        output = nn.functional.smooth_l1_loss(fc(batch_x), batch_y)
        output.backward()
        for param in fc.parameters():
            param.data.add_(-0.001 * param.grad)
        total_loss += output
    print(f"epoch {epoch} loss {total_loss.item() / 10:.4f}")
