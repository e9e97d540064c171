"""memprof inside a Hugging Face Trainer: a GPT-2 sized down, trained, then evaluated with a metric.

    python examples/hf_trainer_callback.py            # the Trainer keeps every eval batch's logits
    python examples/hf_trainer_callback.py --careful  # eval_accumulation_steps: no warning

Needs `pip install memprof[transformers]`; runs on CPU in seconds, downloads nothing.
"""
import argparse
import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from memprof.integrations.transformers import MemprofCallback


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        self.ids = torch.randint(0, 512, (n, 32), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def accuracy(pred):  # needs the predictions: the Trainer gathers the logits of every eval batch
    return {"accuracy": float((pred.predictions[:, :-1].argmax(-1) == pred.label_ids[:, 1:]).mean())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--careful", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    memprof = MemprofCallback(json="hf-report.json", summary=True)
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(
            output_dir=out, max_steps=4, per_device_train_batch_size=4, gradient_accumulation_steps=2,
            per_device_eval_batch_size=4, eval_strategy="steps", eval_steps=4,
            eval_accumulation_steps=1 if args.careful else None, learning_rate=3e-4, use_cpu=True,
            report_to=[], save_strategy="no", disable_tqdm=True, logging_strategy="no", seed=0)
        trainer = Trainer(model=model, args=training, train_dataset=Tokens(64, 1), eval_dataset=Tokens(16, 2),
                          compute_metrics=accuracy, callbacks=[memprof])
        for cb in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(cb)
        trainer.train()
    report = memprof.report
    steps = [s.phase for s in report.steps]
    print(f"{steps.count('train')} train steps, {steps.count('eval')} eval iterations, "
          f"{len(report.diagnoses)} warnings")


if __name__ == "__main__":
    main()
