"""The word-language model's bug: the hidden state carried across batches without detaching it,
backward with retain_graph=True (to make the error go away), weights updated through .data."""
import torch
from torch import nn


class RNNModel(nn.Module):
    def __init__(self, ntoken=200, ninp=32, nhid=256):
        super().__init__()
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.GRU(ninp, nhid)
        self.decoder = nn.Linear(nhid, ntoken)

    def forward(self, inp, hidden):
        output, hidden = self.rnn(self.encoder(inp), hidden)
        return self.decoder(output), hidden


torch.manual_seed(28)
model = RNNModel()
train_data = torch.randint(0, 200, (20 * 12 + 1, 8))
hidden = torch.zeros(1, 8, 256)
lr = 0.5
for batch, i in enumerate(range(0, 20 * 12, 20)):
    data, targets = train_data[i:i + 20], train_data[i + 1:i + 21]
    model.zero_grad()
    output, hidden = model(data, hidden)
    loss = nn.functional.cross_entropy(output.view(-1, 200), targets.reshape(-1))
    loss.backward(retain_graph=True)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-lr)
print(f"{loss.item():.3f}")
