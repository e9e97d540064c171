"""REINFORCE-style episodes that grow longer: each episode's log-probabilities are kept in a list on
the policy, backpropagated once at the episode's end and cleared. Correct code: nothing to report."""
import torch
from torch import nn


class Policy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 4))
        self.saved_log_probs = []
        self.rewards = []

    def forward(self, state):
        return torch.softmax(self.net(state), dim=-1)


def finish_episode(policy, opt, gamma=0.99):
    returns, r = [], 0.0
    for reward in reversed(policy.rewards):
        r = reward + gamma * r
        returns.insert(0, r)
    returns = torch.tensor(returns)
    loss = torch.stack([-lp * ret for lp, ret in zip(policy.saved_log_probs, returns)]).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    del policy.rewards[:]
    del policy.saved_log_probs[:]


def main():
    torch.manual_seed(37)
    policy = Policy()
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for episode in range(12):
        state = torch.randn(8)
        for t in range(10 + 5 * episode):
            probs = policy(state)
            action = torch.distributions.Categorical(probs).sample()
            policy.saved_log_probs.append(torch.log(probs[action]))
            policy.rewards.append(float(action == t % 4))
            state = torch.randn(8)
        finish_episode(policy, opt)
    print("episodes done")


if __name__ == "__main__":
    main()
