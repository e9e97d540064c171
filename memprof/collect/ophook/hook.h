// The op hook: a thread-local RecordFunction callback that sees every op's outputs, as a Python
// TorchDispatchMode would, for a tenth of its cost, and counts each new storage into the active
// Ledger (hook.cpp). Python is called only for what it must add: the user's line for a large
// storage, a weak reference for a storage not marked, and a new high for the lingering-tensor watch.
#pragma once

#include <c10/core/Storage.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ledger.h"

namespace memprof {

struct PairHash {
  size_t operator()(const std::pair<const char*, const char*>& p) const {
    return mix(reinterpret_cast<uintptr_t>(p.first) ^ (reinterpret_cast<uintptr_t>(p.second) << 7));
  }
};

// What each thread keeps, in one thread-local (one TLS lookup per callback).
struct ThreadState {
  bool busy = false;  // ops run by the Python callbacks themselves are not counted
  // Whether each op being run is opaque, and how many opaque ops enclose this point.
  std::vector<char> opaque_stack;
  std::vector<const char*> op_stack;  // the ops being run, innermost last (for the saved-births cache)
  std::vector<char> derived_stack;  // whether each op being run read a storage that scales with the batch
  int opaque_depth = 0;
  // Keyed by the operator's name and overload strings, which live as long as the operator.
  std::unordered_map<std::pair<const char*, const char*>, bool, PairHash> opaque_cache;
  const char* running_op() const { return op_stack.empty() ? nullptr : op_stack.back(); }
};

ThreadState& this_thread();

// The ledger counting now (install), or nullptr.
Ledger* active_ledger();

// After a birth: the Python parts (site, death watch, new high), with the GIL, through the
// installed callbacks. `op`: the op that made it (nullptr: not seen by the callback), for the
// site cache; `out`: which of its outputs.
void python_parts(ThreadState& ts, Ledger* ledger, Entry* e, const c10::Storage& storage, bool watch_new_high,
                  const char* op = nullptr, int32_t out = 0);

// Count this thread's ops (and those of autograd's threads working for it) into `ledger`:
// site() -> int, foreign(storage, key), peak(live); None: not called.
void install(const std::shared_ptr<Ledger>& ledger, pybind11::object site, pybind11::object foreign,
             pybind11::object peak);
void uninstall();

// The pack hook rests (`on`) or runs: the ledger infers saved storages, and the callback stops
// (or starts again) reading ops' inputs, inferring batch scaling's taint from births as well.
void set_infer_saved(Ledger& ledger, bool on);

// Errors the hook dropped rather than break the user's op (error_count tells Python).
void count_error();
int64_t error_count();

}  // namespace memprof
