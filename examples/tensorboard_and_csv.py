"""memprof's per-step memory in TensorBoard, and the report's frames as CSV:
`python examples/tensorboard_and_csv.py` (TensorBoard needs `pip install 'memprof[tensorboard]'`),
then `tensorboard --logdir memprof-tb`. From the command line the same is
`memprof run --tensorboard memprof-tb --csv memprof-csv train.py`."""

import torch
from torch import nn

import memprof

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)

with memprof.track(tensorboard="memprof-tb", csv="memprof-csv") as session:
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(64, 128)), torch.randint(0, 10, (64,)))
        loss.backward()
        opt.step()

report = session.report
print(f"{report.step_count} steps, peak {report.peak_bytes / 2**20:.1f} MiB: scalars in memprof-tb/, "
      "steps.csv, modules.csv and findings.csv in memprof-csv/")
