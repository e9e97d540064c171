"""Careful: PyTorch's actor-critic example: (log-prob, value) pairs saved per step in a namedtuple
list, one backward per episode, and a callback logging each episode."""
from collections import namedtuple

import torch
from torch import nn
from torch.distributions import Categorical

SavedAction = namedtuple("SavedAction", ["log_prob", "value"])
LENGTHS = [30, 45, 28, 50, 33, 41, 26, 47, 36, 44]


class Policy(nn.Module):
    def __init__(self):
        super().__init__()
        self.affine1 = nn.Linear(4, 128)
        self.action_head = nn.Linear(128, 2)
        self.value_head = nn.Linear(128, 1)
        self.saved_actions = []
        self.rewards = []

    def forward(self, x):
        x = torch.relu(self.affine1(x))
        return torch.softmax(self.action_head(x), dim=-1), self.value_head(x)


class Logger:
    def __init__(self):
        self.rewards = []

    def __call__(self, episode, reward):
        self.rewards.append(reward)


def run(callbacks):
    torch.manual_seed(25)
    model = Policy()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for episode, length in enumerate(LENGTHS):
        state = torch.randn(4)
        for t in range(length):
            probs, state_value = model(state)
            m = Categorical(probs)
            action = m.sample()
            model.saved_actions.append(SavedAction(m.log_prob(action), state_value))
            state = torch.randn(4)
            model.rewards.append(float(action.item()))
        R, returns = 0, []
        for r in model.rewards[::-1]:
            R = r + 0.99 * R
            returns.insert(0, R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + 1e-6)
        policy_losses, value_losses = [], []
        for (log_prob, value), R in zip(model.saved_actions, returns):
            policy_losses.append(-log_prob * (R - value.item()))
            value_losses.append(nn.functional.smooth_l1_loss(value, torch.tensor([R])))
        optimizer.zero_grad()
        loss = torch.stack(policy_losses).sum() + torch.stack(value_losses).sum()
        loss.backward()
        optimizer.step()
        for cb in callbacks:
            cb(episode, sum(model.rewards))
        del model.rewards[:]
        del model.saved_actions[:]


logger = Logger()
run([logger])
print(len(logger.rewards))
