"""A small fit() framework: a callback in the net's callback list keeps every batch's predictions."""
import torch
from torch import nn


class Callback:
    def on_batch_end(self, net, y_pred, y):
        pass


class PredictionRecorder(Callback):
    def __init__(self):
        self.y_preds_ = []

    def on_batch_end(self, net, y_pred, y):
        self.y_preds_.append(y_pred)


class PrintLog(Callback):
    def __init__(self):
        self.batches = 0

    def on_batch_end(self, net, y_pred, y):
        self.batches += 1


class NeuralNet:
    def __init__(self, module, callbacks):
        self.module = module
        self.callbacks = list(callbacks)
        self.optimizer_ = torch.optim.SGD(module.parameters(), lr=0.05)

    def train_step(self, x, y):
        y_pred = self.module(x)
        loss = nn.functional.cross_entropy(y_pred, y)
        self.optimizer_.zero_grad()
        loss.backward()
        self.optimizer_.step()
        return y_pred

    def fit(self, batches):
        for x, y in batches:
            y_pred = self.train_step(x, y)
            for cb in self.callbacks:
                cb.on_batch_end(self, y_pred, y)
        return self


def main():
    torch.manual_seed(7)
    net = NeuralNet(nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128)),
                    [PredictionRecorder(), PrintLog()])
    batches = [(torch.randn(64, 64), torch.randint(0, 128, (64,))) for _ in range(12)]
    net.fit(batches)
    print(len(net.callbacks[0].y_preds_), net.callbacks[1].batches)


if __name__ == "__main__":
    main()
