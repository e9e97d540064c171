"""Small training loops for the advisor's tests and benchmark: memprof predicts, groundtruth measures.

usage: advise_models.py --model {mlp,cnn,transformer,lm,rnnlm} [--batch-size N] [--steps N]
                        [--optim {adam,adamw,sgd}] [--keep-grads] [--amp] [--loader]
                        [--grow-at STEP --grow-to N]

``--grow-at STEP --grow-to N``: from step STEP on, batches of N (an out-of-memory at a later step).

``rnnlm`` is PyTorch's word-language model as its example trains it: an ``nn.LSTM`` reading
(bptt, batch) token ids, sequence first, from a corpus batchified before the loop, the hidden state
carried (detached) from one window to the next, and the targets flattened to (bptt * batch,).
"""
import argparse
import functools

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 4096, d: int = 64, seq: int = 32, layers: int = 1) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(seq, d))
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.body(self.emb(ids) + self.pos)))


class Encoder(nn.Module):
    def __init__(self, d: int = 64, seq: int = 48, classes: int = 10) -> None:
        super().__init__()
        self.inp = nn.Linear(16, d)
        layer = nn.TransformerEncoderLayer(d, 4, 2 * d, dropout=0.1, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.inp(x)).mean(1))


class RNNModel(nn.Module):
    """The word-language model's: embedding, a sequence-first LSTM, a decoder, log-softmax."""

    def __init__(self, vocab: int = 2048, d: int = 64, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.vocab, self.hidden, self.layers = vocab, hidden, layers
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(vocab, d)
        self.rnn = nn.LSTM(d, hidden, layers, dropout=0.2)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, state = self.rnn(self.drop(self.encoder(ids)), state)
        decoded = self.decoder(self.drop(out)).view(-1, self.vocab)
        return nn.functional.log_softmax(decoded, dim=1), state

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight = next(self.parameters())
        return weight.new_zeros(self.layers, bsz, self.hidden), weight.new_zeros(self.layers, bsz, self.hidden)


def train_rnnlm(a: argparse.Namespace, model: RNNModel, opt: torch.optim.Optimizer) -> torch.Tensor:
    """The word-language model's loop: windows of ``BPTT`` rows of a corpus batchified into columns."""
    bptt = BPTT
    corpus = torch.randint(0, model.vocab, (2**16,))  # the same corpus at any batch size
    rows = corpus.size(0) // a.batch_size
    source = corpus.narrow(0, 0, rows * a.batch_size).view(a.batch_size, -1).t().contiguous()
    criterion = nn.NLLLoss()
    hidden = model.init_hidden(a.batch_size)
    loss = torch.zeros(())
    for step in range(a.steps):
        i = step * bptt
        data, targets = source[i:i + bptt], source[i + 1:i + 1 + bptt].reshape(-1)
        opt.zero_grad(set_to_none=not a.keep_grads)
        hidden = tuple(h.detach() for h in hidden)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.amp):
            output, hidden = model(data, hidden)
            loss = criterion(output.float(), targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
    return loss


BPTT = 35


def build(name: str) -> tuple[nn.Module, tuple[int, ...], str]:
    """The model, the shape of one sample, and the kind of target."""
    if name == "mlp":
        return nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.GELU(),
                             nn.Linear(1024, 10)), (512,), "class"
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10),
        ), (3, 32, 32), "class"
    if name == "transformer":
        return Encoder(), (48, 16), "class"
    if name == "lm":
        return TinyLM(), (32,), "lm"
    if name == "rnnlm":
        return RNNModel(), (BPTT,), "rnnlm"
    raise SystemExit(f"unknown model {name}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mlp")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--optim", default="adam")
    p.add_argument("--keep-grads", action="store_true", help="zero_grad(set_to_none=False)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CPU")
    p.add_argument("--loader", action="store_true", help="batches from a DataLoader over a dataset")
    p.add_argument("--checkpoint", action="store_true", help="checkpoint each transformer layer")
    p.add_argument("--grow-at", type=int, default=None, help="from this step on, batches of --grow-to")
    p.add_argument("--grow-to", type=int, default=None)
    a = p.parse_args()
    torch.manual_seed(0)
    model, sample, target = build(a.model)
    if a.optim == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    elif a.optim == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    if a.checkpoint:
        from torch.utils.checkpoint import checkpoint

        for layer in model.body.layers:
            layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
    if target == "rnnlm":
        assert isinstance(model, RNNModel)
        print(f"loss {train_rnnlm(a, model, opt).item():.3f}")
        return
    loss_fn = nn.CrossEntropyLoss()
    b = a.batch_size

    def batches():
        if a.loader:  # a fixed data set; the last batch may be smaller
            n = 320
            xs = torch.randint(0, 4096, (n, *sample)) if target == "lm" else torch.randn(n, *sample)
            ys = torch.randint(0, 4096, (n, *sample)) if target == "lm" else torch.randint(0, 10, (n,))
            loader = DataLoader(TensorDataset(xs, ys), batch_size=b, shuffle=True)
            for i, batch in enumerate(loader):
                if i >= a.steps and i < len(loader) - 1:
                    continue  # a few steps, then the last (partial) batch
                yield batch
            return
        for step in range(a.steps):
            n = a.grow_to if a.grow_at is not None and step >= a.grow_at and a.grow_to else b
            if target == "lm":
                yield torch.randint(0, 4096, (n, *sample)), torch.randint(0, 4096, (n, *sample))
            else:
                yield torch.randn(n, *sample), torch.randint(0, 10, (n,))

    for x, y in batches():
        opt.zero_grad(set_to_none=not a.keep_grads)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.amp):
            out = model(x)
            loss = loss_fn(out.flatten(0, -2) if target == "lm" else out, y.flatten())
        loss.backward()
        opt.step()
    print(f"loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
