"""A tiny GPT-2 (transformers) trained in a plain loop: AdamW, a warmup schedule, gradient clipping,
and an evaluation under no_grad every few steps. No download: the model is built from a config."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel, get_linear_schedule_with_warmup

torch.manual_seed(0)
config = GPT2Config(vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
model = GPT2LMHeadModel(config)
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)
sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=4, num_training_steps=24)
data = torch.randint(0, 512, (96, 64))
held_out = torch.randint(0, 512, (16, 64))

for step in range(24):
    batch = data[(step * 4) % 96:(step * 4) % 96 + 4]
    model.train()
    out = model(input_ids=batch, labels=batch)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    if step % 8 == 7:
        model.eval()
        with torch.no_grad():
            val = sum(model(input_ids=held_out[i:i + 4], labels=held_out[i:i + 4]).loss.item() for i in range(0, 16, 4))
        print(f"step {step + 1} train loss {out.loss.item():.4f} val loss {val / 4:.4f}")
