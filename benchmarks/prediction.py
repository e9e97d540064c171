"""How right memprof's predicted peaks are: the advisor against ground truth, in one command.

    python benchmarks/prediction.py            # the full run (1-3 minutes on 2 cores), results under benchmarks/results/
    python benchmarks/prediction.py --quick    # a smoke run: two models, fewer batch sizes

For each training loop of ``tests/scripts/advise_models.py`` (MLP, CNN with BatchNorm, transformer
encoder, tiny LM with a 4096-word vocabulary; Adam, AdamW, SGD with momentum; ``zero_grad`` to None
or to zero; batches made in the loop or from a DataLoader with a smaller last batch), memprof
profiles one run at a reference batch size, then predicts the peak at other batch sizes. Each
prediction is compared with the peak that ``../shared/tools/groundtruth.py``'s tracker measures when
the script really runs at that batch size (same process, one fresh tracker per run). Rows:

- ``batch``: the batch model measured by the run (the advisor's ``batch_size`` predictions), from
  two reference batch sizes;
- ``post-mortem``: the same run under ``--memory-limit`` at 80% of its peak, dead at its first
  step: the batch model of the out-of-memory post-mortem (a fake-tensor replay of the model, plus
  what the run held outside it);
- ``autocast``: the mixed-precision prediction (bf16 on CPU) against a run under autocast;
- ``fits``: the largest batch size for a budget (between the peaks at the two largest batch sizes
  tried) must fit per ground truth, and 15% more must not.

Errors are (predicted - measured) / measured.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import importlib.util
import io
import json
import math
import platform
import runpy
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

SCRIPT = ROOT / "tests" / "scripts" / "advise_models.py"
GROUNDTRUTH = ROOT.parent / "shared" / "tools" / "groundtruth.py"

CONFIGS: list[tuple[str, list[str]]] = [
    ("mlp adam", ["--model", "mlp"]),
    ("mlp sgd-momentum zero-grads", ["--model", "mlp", "--optim", "sgd", "--keep-grads"]),
    ("cnn+bn sgd-momentum", ["--model", "cnn", "--optim", "sgd"]),
    ("cnn+bn adam dataloader", ["--model", "cnn", "--loader"]),
    ("transformer adamw", ["--model", "transformer", "--optim", "adamw"]),
    ("transformer sgd zero-grads", ["--model", "transformer", "--optim", "sgd", "--keep-grads"]),
    ("tiny-lm adam", ["--model", "lm"]),
    ("tiny-lm adamw dataloader", ["--model", "lm", "--optim", "adamw", "--loader"]),
]
B0S = [10, 16]  # reference batch sizes: the run memprof profiles
TARGETS = [5, 13, 24, 37, 64, 100]


@dataclass
class Row:
    config: str
    kind: str  # batch | post-mortem | autocast | fits
    b0: int
    b: int
    measured: int
    predicted: int
    detail: str = ""

    @property
    def error(self) -> float:
        return (self.predicted - self.measured) / self.measured


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    fits: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _groundtruth_module() -> Any:
    spec = importlib.util.spec_from_file_location("groundtruth", GROUNDTRUTH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def measure(gt: Any, args: list[str]) -> int:
    """The script's peak live bytes at these arguments, per the shared ground-truth tracker."""
    gc.collect()
    sys.argv = [str(SCRIPT), *args]
    lb = gt.LiveBytes()
    with contextlib.redirect_stdout(io.StringIO()), lb:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return int(lb.peak)


def profile(args: list[str], budget: int | None = None, limit: int | None = None) -> Any:
    """memprof's session around one run of the script, as ``memprof run`` does; returns the session."""
    from memprof.model import Status
    from memprof.session import Session, SessionConfig

    gc.collect()
    sys.argv = [str(SCRIPT), *args]
    session = Session(SessionConfig(script=str(SCRIPT), publish=False, budget_bytes=budget, memory_limit_bytes=limit))
    session.start()
    status, exc = Status.OK, None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            runpy.run_path(str(SCRIPT), run_name="__main__")
    except torch.OutOfMemoryError as e:
        status, exc = Status.OOM, e
    session.stop(status, exc)
    return session


def run_config(gt: Any, name: str, args: list[str], targets: list[int], out: Results) -> None:
    from memprof.advise.batch_model import batch_model
    from memprof.advise.mixed_precision import AmpModel

    truth = {b: measure(gt, [*args, "--batch-size", str(b)]) for b in sorted({*B0S, *targets})}
    for b0 in B0S:
        data = profile([*args, "--batch-size", str(b0)]).run_data()
        model = batch_model(data, data.replays)
        assert model is not None and model.source.startswith("measured"), name
        for b in targets:
            out.rows.append(Row(name, "batch", b0, b, truth[b], model.predict(b), detail=model.source))
    b0 = B0S[-1]
    # the post-mortem: the same run under --memory-limit 80% of its peak, dead at its first step
    limit = int(0.8 * truth[b0])
    data = profile([*args, "--batch-size", str(b0)], limit=limit).run_data()
    pm = batch_model(data, data.replays)
    if data.oom is not None and pm is not None:
        for b in targets:
            out.rows.append(Row(name, "post-mortem", b0, b, truth[b], pm.predict(b),
                                detail=f"{pm.source}, died at step {data.oom.step}"))
    data = profile([*args, "--batch-size", str(b0)]).run_data()
    model = batch_model(data, data.replays)
    assert model is not None
    replays = data.replays
    if replays is not None and replays.amp is not None:
        amp = AmpModel(model, replays)
        for b in (b0, targets[-1]):
            measured = measure(gt, [*args, "--batch-size", str(b), "--amp"])
            out.rows.append(Row(name, "autocast", b0, b, measured, amp.predict(b)))
    # the largest batch for a budget between the peaks at the two largest batch sizes: it fits,
    # and 15% more does not
    budget = (truth[targets[-2]] + truth[targets[-1]]) // 2
    suggested = model.largest(budget) or 0
    bigger = math.ceil(suggested * 1.15)
    at, above = measure(gt, [*args, "--batch-size", str(suggested)]), measure(gt, [*args, "--batch-size", str(bigger)])
    out.fits.append({"config": name, "budget_bytes": budget, "suggested": suggested, "measured_bytes": at,
                     "predicted_bytes": model.predict(suggested), "fits": at <= budget,
                     "bigger": bigger, "bigger_measured_bytes": above, "bigger_fits": above <= budget})
    out.rows.append(Row(name, "fits", b0, suggested, at, model.predict(suggested),
                        detail=f"budget {mib(budget)} MiB; {'fits' if at <= budget else 'DOES NOT FIT'}; "
                               f"{bigger}: {mib(above)} MiB, {'FITS' if above <= budget else 'does not fit'}"))


def summary(rows: list[Row]) -> dict[str, dict[str, float]]:
    out = {}
    for kind in ("batch", "post-mortem", "autocast", "fits"):
        errs = [abs(r.error) for r in rows if r.kind == kind]
        if errs:
            out[kind] = {"n": len(errs), "median": statistics.median(errs), "worst": max(errs)}
    return out


def mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def render(res: Results, command: str, quick: bool) -> str:
    s = summary(res.rows)
    fits_ok = sum(f["fits"] and not f["bigger_fits"] for f in res.fits)
    lines = [
        "# memprof prediction accuracy (CPU)",
        "",
        f"Reproduce: `{command}`",
        "",
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC · torch {torch.__version__} · Python "
        f"{platform.python_version()} · {platform.machine()} · {torch.get_num_threads()} threads · "
        f"{res.seconds:.0f} s{' · --quick' if quick else ''}",
        "",
        "Each prediction is made from one memprof run at the reference batch size b0 and compared with the peak",
        "of live tensor bytes that `../shared/tools/groundtruth.py`'s tracker measures when the script runs at b.",
        "`batch`: the measured batch model (the `batch_size` advice); `post-mortem`: the batch model of a run",
        "killed by `--memory-limit` (80% of its peak) at its first step, from a fake-tensor replay of the model;",
        "`autocast`: the `mixed_precision` prediction (bf16) against a run under `torch.autocast`; `fits`: the",
        "largest batch size for a budget between the peaks at the two largest b tried, checked at b and 1.15 b.",
        "",
        "| prediction | n | median error | worst error |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, v in s.items():
        lines.append(f"| {kind} | {int(v['n'])} | {v['median']:.3%} | {v['worst']:.3%} |")
        if kind == "post-mortem":
            default = [abs(r.error) for r in res.rows if r.kind == kind and "zero-grads" not in r.config]
            if default:
                lines.append(f"| {kind}, gradients set to None | {len(default)} | {statistics.median(default):.3%} | "
                             f"{max(default):.3%} |")
    lines += ["", f"Suggested batch size fits its budget and 15% more does not: {fits_ok} of {len(res.fits)}.", "",
              "Known limit: the post-mortem replay assumes `zero_grad(set_to_none=True)` (PyTorch's default); a loop",
              "that zeroes gradients in place keeps them through the forward pass, which a step that never completed",
              "can't show (the `zero-grads` rows).", "",
              "| loop | prediction | b0 | b | measured MiB | predicted MiB | error | note |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in res.rows:
        lines.append(f"| {r.config} | {r.kind} | {r.b0} | {r.b} | {mib(r.measured)} | {mib(r.predicted)} | "
                     f"{r.error:+.3%} | {r.detail} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="two loops, two batch sizes: a smoke run")
    p.add_argument("--out", default=str(HERE / "results"), help="folder for prediction-cpu.md and .json")
    a = p.parse_args(argv)
    if not GROUNDTRUTH.exists():
        print(f"no ground-truth tool at {GROUNDTRUTH}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    gt = _groundtruth_module()
    configs = [CONFIGS[2], CONFIGS[6]] if a.quick else CONFIGS
    targets = [5, 24, 37] if a.quick else TARGETS
    res = Results()
    t0 = time.perf_counter()
    old_argv = sys.argv
    try:
        for name, args in configs:
            t = time.perf_counter()
            run_config(gt, name, [*args, "--steps", "3"], targets, res)
            print(f"  {name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    finally:
        sys.argv = old_argv
    res.seconds = time.perf_counter() - t0
    command = "python benchmarks/prediction.py" + (" --quick" if a.quick else "")
    text = render(res, command, a.quick)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if a.quick else ""
    (out / f"prediction-cpu{suffix}.md").write_text(text)
    (out / f"prediction-cpu{suffix}.json").write_text(json.dumps({
        "command": command, "torch": torch.__version__, "seconds": res.seconds, "summary": summary(res.rows),
        "rows": [{**r.__dict__, "error": r.error} for r in res.rows], "fits": res.fits,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
