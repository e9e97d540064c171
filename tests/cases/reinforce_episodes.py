"""Careful: PyTorch's REINFORCE example on a made-up environment: the policy called once per
environment step with autograd on, its log-probabilities kept, one backward per episode, the lists
cleared after the step."""
import torch
from torch import nn
from torch.distributions import Categorical

LENGTHS = [40, 52, 36, 61, 44, 35, 57, 48, 39, 60, 43, 55]


class Env:
    """Episodes of fixed lengths, in an order that does not grow."""

    def __init__(self):
        self.episode = -1
        self.t = 0

    def reset(self):
        self.episode += 1
        self.t = 0
        return torch.randn(4)

    def step(self, action):
        self.t += 1
        done = self.t >= LENGTHS[self.episode % len(LENGTHS)]
        return torch.randn(4), 1.0 if action == 1 else 0.5, done


class Policy(nn.Module):
    def __init__(self):
        super().__init__()
        self.affine1 = nn.Linear(4, 128)
        self.affine2 = nn.Linear(128, 2)
        self.saved_log_probs = []
        self.rewards = []

    def forward(self, x):
        return torch.softmax(self.affine2(torch.relu(self.affine1(x))), dim=1)


torch.manual_seed(24)
policy = Policy()
optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
eps = 1e-6


def select_action(state):
    probs = policy(state.unsqueeze(0))
    m = Categorical(probs)
    action = m.sample()
    policy.saved_log_probs.append(m.log_prob(action))
    return action.item()


def finish_episode():
    R = 0
    policy_loss = []
    returns = []
    for r in policy.rewards[::-1]:
        R = r + 0.99 * R
        returns.insert(0, R)
    returns = torch.tensor(returns)
    returns = (returns - returns.mean()) / (returns.std() + eps)
    for log_prob, R in zip(policy.saved_log_probs, returns):
        policy_loss.append(-log_prob * R)
    optimizer.zero_grad()
    policy_loss = torch.cat(policy_loss).sum()
    policy_loss.backward()
    optimizer.step()
    del policy.rewards[:]
    del policy.saved_log_probs[:]


env = Env()
running = 0.0
for i_episode in range(len(LENGTHS)):
    state, ep_reward = env.reset(), 0
    done = False
    while not done:
        action = select_action(state)
        state, reward, done = env.step(action)
        policy.rewards.append(reward)
        ep_reward += reward
    running = 0.05 * ep_reward + 0.95 * running
    finish_episode()
print(f"running reward {running:.2f}")
