"""A trainer that calls its callbacks through a table of bound methods; one callback keeps every
batch's outputs, graph and all, three references below the loop's frame."""
import torch
from torch import nn


class OutputCollector:
    def __init__(self):
        self.outputs = []

    def on_train_batch_end(self, outputs):
        self.outputs.append(outputs["logits"])


class Trainer:
    def __init__(self, callbacks):
        self.hooks = {"on_train_batch_end": [cb.on_train_batch_end for cb in callbacks]}

    def call(self, event, **kwargs):
        for fn in self.hooks[event]:
            fn(**kwargs)

    def fit(self, model, data):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for x, y in data:
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.call("on_train_batch_end", outputs={"loss": loss.detach(), "logits": logits})


def main():
    torch.manual_seed(31)
    model = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 64))
    data = [(torch.randn(48, 32), torch.randint(0, 64, (48,))) for _ in range(12)]
    Trainer([OutputCollector()]).fit(model, data)
    print("done")


if __name__ == "__main__":
    main()
