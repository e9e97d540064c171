"""What counting storages would cost with births and deaths both kept in C++: a measured prototype.

    python benchmarks/cpp_tracker_floor.py              # ~2 min (compiles a small C++ extension once)
    python benchmarks/cpp_tracker_floor.py --rounds 3

memprof's detailed mode counts every storage op by op: its C++ op hook sees births and calls
Python for each new storage, whose death a Python weak reference reports. The plan for the
detailed mode's 2x budget on the tiny MLP (benchmarks/README.md) is to keep both ends in C++. This
prototype does only that, to measure the cost before building it: a ``RecordFunction`` callback that
marks each new CPU storage by swapping its data deleter for one that counts the death and calls the
original. A storage already marked is known by its deleter (no table lookup for views and in-place
ops). No Python runs per storage. It prints the step time of plain PyTorch, of this prototype and
of memprof's tracker as it is (``NativeTracker``, the ledger that grew from this prototype, or
``StorageTracker`` without a compiler), and checks that the prototype's peak over a few steps
equals the tracker's.

Known limitations (why it is a prototype and not the tracker): it counts only storages of the
default CPU allocator (others keep their deleter: CUDA's caching allocator recognises its own, e.g.
for ``record_stream``, so a CUDA tracker would keep Python's weak references); it keeps no
categories, sites or module names, which the detailed mode needs for the storages it names; and its
deleters stay swapped after it is turned off (the extension is never unloaded, so they keep working).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.models import WORKLOADS, Trainer  # noqa: E402
from benchmarks.overhead import timed_block  # noqa: E402
from memprof.collect import ophook  # noqa: E402
from memprof.collect.native import NativeTracker  # noqa: E402
from memprof.collect.storage import StorageTracker  # noqa: E402

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/record_function.h>
#include <atomic>
#include <unordered_map>
#include <vector>

namespace {
std::atomic_flag lock_flag = ATOMIC_FLAG_INIT;
struct Guard {
  Guard() { while (lock_flag.test_and_set(std::memory_order_acquire)) {} }
  ~Guard() { lock_flag.clear(std::memory_order_release); }
};
c10::DeleterFnPtr cpu_deleter = nullptr;  // the default CPU allocator's, read from a fresh tensor
std::unordered_map<void*, int64_t> sizes;  // data pointer -> bytes, for the storages marked
int64_t live = 0, peak = 0, births = 0, deaths = 0, unmarked = 0;
at::CallbackHandle handle = 0;
thread_local std::vector<char> opaque_stack;
thread_local int opaque_depth = 0;

void on_death(void* ctx) {
  {
    Guard g;
    auto it = sizes.find(ctx);
    if (it != sizes.end()) {
      live -= it->second;
      ++deaths;
      sizes.erase(it);
    }
  }
  cpu_deleter(ctx);
}

// As memprof's op hook: the ops inside an op without a CompositeImplicitAutograd kernel are hidden.
bool is_opaque(const at::RecordFunction& fn) {
  thread_local std::unordered_map<const char*, bool> cache;
  auto it = cache.find(fn.name());
  if (it != cache.end()) return it->second;
  bool opaque = false;
  if (auto name = fn.operator_name()) {
    auto op = c10::Dispatcher::singleton().findOp(*name);
    opaque = op.has_value() && !op->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd);
  }
  cache.emplace(fn.name(), opaque);
  return opaque;
}

void mark(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return;
  c10::StorageImpl* s = t.storage().unsafeGetStorageImpl();
  const int64_t n = static_cast<int64_t>(s->nbytes());
  if (n == 0) return;
  at::DataPtr& dp = s->_mutable_data_ptr_no_checks();
  if (dp.get_deleter() == &on_death) return;  // marked already: known without a lookup
  if (dp.get_context() != dp.get() || !dp.compare_exchange_deleter(cpu_deleter, &on_death)) {
    ++unmarked;
    return;
  }
  Guard g;
  sizes[dp.get()] = n;
  live += n;
  ++births;
  if (live > peak) peak = live;
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  const bool opaque = is_opaque(fn);
  opaque_stack.push_back(opaque);
  if (opaque) ++opaque_depth;
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  if (!opaque_stack.empty()) {
    if (opaque_stack.back()) --opaque_depth;
    opaque_stack.pop_back();
  }
  if (opaque_depth > 0) return;
  for (const c10::IValue& v : fn.outputs()) {
    if (v.isTensor()) {
      mark(v.toTensor());
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) mark(t);
    }
  }
}

void install() {
  cpu_deleter = at::empty({1}).storage().data_ptr().get_deleter();
  { Guard g; live = peak = births = deaths = unmarked = 0; sizes.clear(); }
  handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).needsOutputs(true).scopes({at::RecordScope::FUNCTION}));
}
void uninstall() { at::removeCallback(handle); handle = 0; }
std::vector<int64_t> counts() { Guard g; return {live, peak, births, deaths, unmarked}; }
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("install", &install);
  m.def("uninstall", &uninstall);
  m.def("counts", &counts, "live, peak, births, deaths, storages left unmarked (not the default CPU allocator's)");
}
"""


def build() -> Any:
    from torch.utils import cpp_extension

    folder = Path(tempfile.gettempdir()) / "memprof-bench-cpp-tracker"
    folder.mkdir(exist_ok=True)
    return cpp_extension.load_inline("memprof_bench_cpp_tracker", cpp_sources=[_SOURCE],
                                     build_directory=str(folder), extra_cflags=["-O2"])


def block(trainer: Trainer, steps: int) -> float:
    """CPU milliseconds per step (the verdict basis of overhead.py on the CPU)."""
    return timed_block(trainer, steps)[1] * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2000, help="steps per block (default 2000)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    proto = build()
    hook = ophook.load(build=True, log=lambda m: print(m, file=sys.stderr))
    if hook is None:
        print(f"memprof's op hook could not be built ({ophook.failure()}): its column uses the dispatch mode",
              file=sys.stderr)
    trainer = WORKLOADS["tiny_mlp"].make()
    for _ in range(300):
        trainer.step()

    # The same storages counted: peak over 3 steps, from nothing, by the prototype and by the tracker.
    proto.install()
    for _ in range(3):
        trainer.step()
    proto.uninstall()
    live, proto_peak, births, deaths, unmarked = proto.counts()
    tracker: StorageTracker | NativeTracker = NativeTracker(hook) if hook is not None else StorageTracker()
    tracker.start()
    for _ in range(3):
        trainer.step()
    tracker.stop()

    times: dict[str, list[float]] = {"plain": [], "prototype": [], "tracker": []}
    for _ in range(a.rounds):
        times["plain"].append(block(trainer, a.steps))
        proto.install()
        try:
            times["prototype"].append(block(trainer, a.steps))
        finally:
            proto.uninstall()
        tr = NativeTracker(hook) if hook is not None else StorageTracker()
        tr.start()
        try:
            times["tracker"].append(block(trainer, a.steps))
        finally:
            tr.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    plain = med["plain"]
    print(f"tiny MLP, {a.rounds} rounds of {a.steps} steps, CPU time per step (median), torch {torch.__version__}")
    print(f"  plain PyTorch                       {plain:.3f} ms")
    print(f"  births and deaths in C++ (prototype) {med['prototype']:.3f} ms  (+{med['prototype'] - plain:.3f} ms)")
    print(f"  memprof's tracker, {type(tracker).__name__:14s}   "
          f"{med['tracker']:.3f} ms  (+{med['tracker'] - plain:.3f} ms)")
    print(f"  peak over 3 steps: prototype {proto_peak} bytes ({births} births, {deaths} deaths, {unmarked} unmarked), "
          f"tracker {tracker.peak} bytes: {'equal' if proto_peak == tracker.peak else 'DIFFERENT'}")
    return 0 if proto_peak == tracker.peak else 1


if __name__ == "__main__":
    raise SystemExit(main())
