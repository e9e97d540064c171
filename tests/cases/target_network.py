"""DQN-style update: the target network's forward pass records autograd history for nothing."""
import copy

import torch
from torch import nn

torch.manual_seed(4)
q_net = nn.Sequential(nn.Linear(32, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 6))
target_net = copy.deepcopy(q_net)
opt = torch.optim.RMSprop(q_net.parameters(), lr=1e-4)
for it in range(10):
    state = torch.randn(128, 32)
    next_state = torch.randn(128, 32)
    reward = torch.randn(128)
    action = torch.randint(0, 6, (128, 1))
    q = q_net(state).gather(1, action).squeeze(1)
    next_q = target_net(next_state).max(1).values.detach()
    loss = nn.functional.smooth_l1_loss(q, reward + 0.9 * next_q)
    opt.zero_grad()
    loss.backward()
    opt.step()
print("done")
