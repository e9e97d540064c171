"""memprof inside a Lightning Trainer: a module that keeps every step's logits, graph and all.

    python examples/lightning_callback.py            # memprof's epoch lines, then its summary
    python examples/lightning_callback.py --tune     # Lightning's batch-size tuner first (not profiled)
    python examples/lightning_callback.py --careful  # the fix memprof suggests: no warning

Needs `pip install memprof[lightning]`; runs on CPU in seconds.
"""
import argparse

import lightning.pytorch as L
import torch
from lightning.pytorch.tuner import Tuner
from torch.utils.data import DataLoader, TensorDataset

from memprof.integrations.lightning import MemprofCallback


class Classifier(L.LightningModule):
    def __init__(self, careful: bool) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 4))
        self.careful = careful
        self.outputs = []  # for a metric at the epoch's end
        self.batch_size = 32

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.outputs.append(logits.detach() if self.careful else logits)  # the graph of every step, kept
        return torch.nn.functional.cross_entropy(logits, y)

    def on_train_epoch_end(self):
        self.outputs.clear()

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1024, 64, generator=g)
        return DataLoader(TensorDataset(x, (x[:, :4].sum(dim=1) > 0).long()), batch_size=self.batch_size)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--careful", action="store_true")
    parser.add_argument("--tune", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Classifier(args.careful)
    memprof = MemprofCallback(json="lightning-report.json", summary=True)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[memprof])
    if args.tune:
        Tuner(trainer).scale_batch_size(model, init_val=16, max_trials=3, steps_per_trial=2)
    trainer.fit(model)
    report = memprof.report
    print(f"peak {report.peak_bytes} bytes, {len(report.steps)} steps, {len(report.diagnoses)} warnings")


if __name__ == "__main__":
    main()
