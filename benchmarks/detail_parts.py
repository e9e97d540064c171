"""Where the detailed mode's time goes on the tiny MLP: one part turned off at a time.

    python benchmarks/detail_parts.py              # ~4 min; prints a table, writes results/detail-parts-<date>.md
    python benchmarks/detail_parts.py --rounds 3   # quicker, noisier

For each round: a block of plain steps, then a block under ``--detail full`` as is, then one block
per variant with one part of memprof replaced by a no-op (a Session entered fresh each block, warmed
up). Each figure is the median over rounds of the block's CPU time per step; the difference to the
full mode is what that part costs. The variants change what memprof records (an ablation, not a
mode anyone runs). The floor of the op hook itself, a bare ``RecordFunction`` callback that asks for
outputs and does nothing, is measured too where a C++ compiler is at hand.

Known limitations: parts interact (turning the forward marks off also skips their callbacks in
backward), so the differences do not add up exactly to the total.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.models import WORKLOADS, Trainer  # noqa: E402
from benchmarks.overhead import timed_block  # noqa: E402
from memprof.collect import graphs, modules, native, ophook  # noqa: E402
from memprof.session import Session, SessionConfig  # noqa: E402
from memprof.session.optimizers import Optimizers  # noqa: E402
from memprof.session.schedule import Schedule  # noqa: E402
from memprof.session.steps import Steps  # noqa: E402

Patch = tuple[Any, str, Callable[..., Any]]


def _noop(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


def _no_site(self: Any) -> int:
    return -1  # the op hook still calls Python for each large storage; no frame is walked


def _pack_plain(self: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    return torch.Tensor.detach


def _never(self: Any, *args: Any) -> bool:
    return False


def _no_watch(self: Any, output: Any, record: Any) -> bool:
    return False


VARIANTS: dict[str, tuple[str, list[Patch]]] = {
    "full": ("--detail full, as is", []),
    "sites": ("no user line for large storages (the op hook still calls Python for each)",
              [(native.NativeTracker, "_site_of_op", _no_site)]),
    "pack": ("saved tensors not categorised nor charged to modules (the hook stays, as a plain detach)",
             [(modules.ModuleCollector, "_pack_hook", _pack_plain)]),
    "census": ("no census of the user's variables", [(Schedule, "diagnosis_due", _never)]),
    "record": ("no per-step record (census included)", [(Steps, "record", _noop)]),
    "forward": ("no forward-pass marks on the model's output", [(graphs.ForwardTracker, "watch", _no_watch)]),
    "opt_pre": ("gradients not categorised before the optimizer step", [(Optimizers, "before_step", _noop)]),
}

_FLOOR_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/record_function.h>
namespace {
at::CallbackHandle handle = 0;
std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction&) { return nullptr; }
void on_end(const at::RecordFunction& fn, at::ObserverContext*) { (void)fn.outputs(); }
void install() {
  handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).needsOutputs(true).scopes({at::RecordScope::FUNCTION}));
}
void uninstall() { at::removeCallback(handle); handle = 0; }
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("install", &install); m.def("uninstall", &uninstall); }
"""


def _floor_module() -> Any:
    """A bare RecordFunction callback with outputs: what any op-level C++ hook pays. None without a compiler."""
    try:
        from torch.utils import cpp_extension

        folder = Path(tempfile.gettempdir()) / "memprof-bench-floor"
        folder.mkdir(exist_ok=True)
        return cpp_extension.load_inline("memprof_bench_floor", cpp_sources=[_FLOOR_SOURCE],
                                         build_directory=str(folder), extra_cflags=["-O2"])
    except Exception as e:
        print(f"the RecordFunction floor is not measured: {e}", file=sys.stderr)
        return None


def block(trainer: Trainer, steps: int) -> float:
    """CPU milliseconds per step (the verdict basis of overhead.py on the CPU)."""
    return timed_block(trainer, steps)[1] * 1e3


def under(trainer: Trainer, patches: list[Patch], steps: int) -> float:
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    for owner, name, fn in patches:
        setattr(owner, name, fn)
    try:
        session = Session(SessionConfig(script=__file__, detail="full", publish=True)).start()
        try:
            for _ in range(20):
                trainer.step()
            return block(trainer, steps)
        finally:
            session.stop()
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=1500, help="steps per block (default 1500)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--no-floor", action="store_true", help="skip the bare RecordFunction callback (it compiles a C++ extension)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if ophook.load(build=True, log=lambda m: print(m, file=sys.stderr)) is None:
        print(f"memprof's op hook is not built ({ophook.failure()}): the dispatch mode is measured", file=sys.stderr)
    floor = None if a.no_floor else _floor_module()
    trainer = WORKLOADS["tiny_mlp"].make()
    for _ in range(300):
        trainer.step()
    times: dict[str, list[float]] = {"plain": [], **{k: [] for k in VARIANTS}}
    if floor is not None:
        times["floor"] = []
    for r in range(a.rounds):
        times["plain"].append(block(trainer, a.steps))
        if floor is not None:
            floor.install()
            try:
                times["floor"].append(block(trainer, a.steps))
            finally:
                floor.uninstall()
        for key, (_, patches) in VARIANTS.items():
            times[key].append(under(trainer, patches, a.steps))
        print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in times.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in times.items()}
    plain, full = med["plain"], med["full"]
    lines = [
        f"# The detailed mode's parts, tiny MLP, {dt.date.today().isoformat()}", "",
        f"Command: `python benchmarks/detail_parts.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip() + "",
        f"torch {torch.__version__}, 1 intra-op thread, {a.rounds} rounds of {a.steps} steps, CPU time per step (median).",
        "", f"Plain step {plain:.3f} ms; `--detail full` {full:.3f} ms (+{full - plain:.3f} ms, x{full / plain:.2f}).", "",
        "| part turned off | step | what the part costs |", "| --- | --- | --- |",
    ]
    for key, (label, _) in VARIANTS.items():
        if key != "full":
            lines.append(f"| {label} | {med[key]:.3f} ms | {full - med[key]:+.3f} ms |")
    if floor is not None:
        lines += ["", f"A bare RecordFunction callback asking for outputs (no memprof): {med['floor']:.3f} ms "
                      f"(+{med['floor'] - plain:.3f} ms over plain): the floor of any op-level C++ hook."]
    text = "\n".join(lines)
    print(text)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"detail-parts-{dt.date.today().isoformat()}.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
