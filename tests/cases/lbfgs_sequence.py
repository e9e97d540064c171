"""Careful: PyTorch's time-sequence prediction: LBFGS with a closure, a no_grad forecast after each step."""
import torch
from torch import nn


class Sequence(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm1 = nn.LSTMCell(1, 51)
        self.linear = nn.Linear(51, 1)

    def forward(self, inp, future=0):
        outputs = []
        h = torch.zeros(inp.size(0), 51)
        c = torch.zeros(inp.size(0), 51)
        output = torch.zeros(inp.size(0), 1)
        for input_t in inp.split(1, dim=1):
            h, c = self.lstm1(input_t, (h, c))
            output = self.linear(h)
            outputs.append(output)
        for _ in range(future):
            h, c = self.lstm1(output, (h, c))
            output = self.linear(h)
            outputs.append(output)
        return torch.cat(outputs, dim=1)


torch.manual_seed(23)
t = torch.arange(40.0).unsqueeze(0) + 4 * torch.randint(-2, 2, (12, 1))
data = torch.sin(t / 6.0)
inp, target = data[3:, :-1], data[3:, 1:]
test_input, test_target = data[:3, :-1], data[:3, 1:]
seq = Sequence()
criterion = nn.MSELoss()
optimizer = torch.optim.LBFGS(seq.parameters(), lr=0.8)
for i in range(8):
    def closure():
        optimizer.zero_grad()
        out = seq(inp)
        loss = criterion(out, target)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        future = 20
        pred = seq(test_input, future=future)
        loss = criterion(pred[:, :-future], test_target)
print(f"test loss {loss.item():.4f}")
