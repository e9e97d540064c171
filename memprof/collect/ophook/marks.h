// A storage's entry: found by its mark, or made (and marked) at its birth.
//
// A storage of the default CPU allocator is marked by swapping its DataPtr's deleter for on_death,
// which counts the death, then frees the memory with the allocator's own deleter: views, in-place
// ops and outputs on known storages are recognised by their deleter, with no lookup, and no Python
// runs at a birth or a death. Other storages (CUDA's caching allocator recognises its own deleter,
// pinned and shared memory likewise) keep their DataPtr: their entry is found in the ledger's
// table, and Python's weak reference to the storage reports their death (Ledger::release).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/StorageImpl.h>

#include <mutex>
#include <unordered_map>

#include "ledger.h"

namespace memprof {

// The marked storages' entries, by data pointer: the deleter is given only that.
struct Marks {
  SpinLock mu;
  std::unordered_map<void*, Entry*> by_data;
  c10::DeleterFnPtr cpu_deleter = nullptr;  // the default CPU allocator's, read from a fresh tensor
};
extern Marks marks;

void on_death(void* data);

// Read the default CPU allocator's deleter, once, before anything is marked.
void prepare_marks();

// The entry of a storage marked by a ledger (ours by its deleter), else nullptr.
inline Entry* marked_entry(c10::StorageImpl* s) {
  const at::DataPtr& dp = s->data_ptr();
  if (dp.get_deleter() != &on_death) return nullptr;
  std::lock_guard<SpinLock> g(marks.mu);
  auto it = marks.by_data.find(dp.get());
  return it == marks.by_data.end() ? nullptr : it->second;
}

// The storage of a tensor; nullptr when it has none or no bytes.
c10::StorageImpl* storage_of(const at::Tensor& t);

// Count `s` if new: its entry, and whether it was made now (`made`) and is a new high past the
// peak watch's mark (`new_high`). Not marked when made: Python must watch its death. `birth_*`:
// where the op hook saw it born (see SiteKey); 0/nullptr/-1 for a call from Python.
Entry* find_or_add(Ledger* ledger, c10::StorageImpl* s, const at::Tensor& t, int category, int64_t step,
                   bool* made, bool* new_high, int64_t birth_op = 0, const char* birth_name = nullptr,
                   int32_t birth_out = -1);

}  // namespace memprof
