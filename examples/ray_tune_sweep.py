"""A Ray Tune sweep over batch sizes, each trial profiled by memprof: `python examples/ray_tune_sweep.py`
(needs `pip install 'memprof[ray]'`). The 4096 trial passes the 16 MiB budget in its first epoch and
is stopped there; the others report their peak and the largest batch that would fit."""

import tempfile

import ray
import torch
from ray import tune
from torch import nn

from memprof.integrations.ray_tune import MemprofStopper, profiled


def train(config: dict) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(3):
        for _ in range(8):
            opt.zero_grad()
            x, y = torch.randn(config["batch_size"], 128), torch.randint(0, 10, (config["batch_size"],))
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
        tune.report({"loss": loss.item(), "epoch": epoch})


if __name__ == "__main__":
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            profiled(train, budget="16MiB"),
            param_space={"batch_size": tune.grid_search([64, 512, 4096])},
            tune_config=tune.TuneConfig(max_concurrent_trials=1),
            run_config=tune.RunConfig(storage_path=storage, stop=MemprofStopper(), verbose=0),
        )
        for result in tuner.fit():
            m = result.metrics["memprof"]
            print(f"batch {result.config['batch_size']:>5}: peak {m['peak_bytes'] / 2**20:.1f} MiB, "
                  f"fits {m.get('fits')}, largest batch that fits {m.get('max_batch_size', '-')}")
