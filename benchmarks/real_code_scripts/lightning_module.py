"""A Lightning module: training_step, validation_step, configure_optimizers, Trainer.fit on the CPU."""

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 4))
        self.val_losses: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_losses.append(nn.functional.cross_entropy(self.net(x), y).item())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


L.seed_everything(0, verbose=False)
x, y = torch.randn(512, 32), torch.randint(0, 4, (512,))
train = DataLoader(TensorDataset(x[:448], y[:448]), batch_size=32)
val = DataLoader(TensorDataset(x[448:], y[448:]), batch_size=32)
model = Classifier()
trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
trainer.fit(model, train, val)
print(f"epochs {trainer.current_epoch} last val loss {sum(model.val_losses[-2:]) / 2:.4f}")
