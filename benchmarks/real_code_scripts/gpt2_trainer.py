"""A tiny GPT-2 under transformers.Trainer: training steps, then an evaluation; no download, no logger."""

import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 512, (n, 64), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                   bos_token_id=0, eos_token_id=0))
with tempfile.TemporaryDirectory() as out:
    args = TrainingArguments(output_dir=out, max_steps=16, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                             learning_rate=3e-4, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                             logging_strategy="no", seed=0, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(64, 1), eval_dataset=Tokens(16, 2))
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    result = trainer.train()
    metrics = trainer.evaluate()
print(f"train loss {result.training_loss:.4f} steps {result.global_step}")
print(f"eval loss {metrics['eval_loss']:.4f}")
