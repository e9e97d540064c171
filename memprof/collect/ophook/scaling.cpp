// Batch scaling: which storages grow with the batch size, as
// memprof.collect.storage.StorageTracker._scales decides it (the advisor's batch-size figures).
#include "ledger.h"
#include "marks.h"

#include <algorithm>

namespace memprof {

// A shape scales when the batch leads it (or a multiple of it does, batch * sequence) or is one of
// its dimensions, unless it is a parameter's size (a gradient, optimizer state, a transposed
// weight gradient): the same numel in another shape (an activation) still may.
bool Ledger::scales(c10::IntArrayRef shape) const {
  const int64_t b = batch;
  if (b <= 0 || shape.empty()) return false;
  const bool has_b = std::find(shape.begin(), shape.end(), b) != shape.end();
  if (!((shape[0] >= b && shape[0] % b == 0) || has_b)) return false;
  return !param_sized(shape);
}

// A parameter's numel and, sorted, its dimensions.
bool Ledger::param_sized(c10::IntArrayRef shape) const {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (!fixed_numels.count(numel)) return false;
  std::vector<int64_t> sorted(shape.begin(), shape.end());
  std::sort(sorted.begin(), sorted.end());
  return fixed_shapes.count(sorted) > 0;
}

// Whether `s` is a storage of this ledger that scales with the batch (an op's input).
bool Ledger::input_scales(c10::StorageImpl* s) {
  if (s == nullptr || s->nbytes() == 0) return false;
  const intptr_t key = reinterpret_cast<intptr_t>(s);
  Entry* e = marked_entry(s);
  if (e != nullptr) return e->ledger.get() == this && e->key == key && e->scaled;
  std::lock_guard<SpinLock> g(mu);  // a foreign storage (CUDA's): in the table
  auto it = live_entries.find(key);
  return it != live_entries.end() && it->second->scaled;
}

// A storage made by an op from one that scales (`derived`) scales too, though its shape may not
// show the batch (an LSTM's workspace, flat bytes), unless it has a parameter's number of elements
// in any shape (a gradient, a bias's gradient reduced over the batch as (1, n)): the rule of
// StorageTracker._new. Saved for backward before its op ended (pack.cpp), it may be an activation.
void Ledger::taint(Entry* e, bool derived) {
  if (!derived) return;
  std::lock_guard<SpinLock> g(mu);
  if (e->scaled || e->category < TRANSIENT_FROM || e->step == PRE_LOOP || batch <= 0 || e->shape.empty()) return;
  int64_t numel = 1;
  for (int64_t d : e->shape) numel *= d;
  if (fixed_numels.count(numel)) return;  // a parameter's number of elements, in any shape
  e->scaled = true;
  scaled_live += e->nbytes;
}

// The batch size and the parameters' sizes (numels, sorted shapes) that scales() checks.
void Ledger::set_scaling(int64_t batch_size, const std::vector<int64_t>& numels,
                         const std::vector<std::vector<int64_t>>& sorted_shapes) {
  std::lock_guard<SpinLock> g(mu);
  batch = batch_size;
  fixed_numels = std::unordered_set<int64_t>(numels.begin(), numels.end());
  fixed_shapes = std::set<std::vector<int64_t>>(sorted_shapes.begin(), sorted_shapes.end());
}

// The first model call's batch: pre-loop storages that scale with it. Its inputs when known (the
// batch at any dimension: (sequence, batch) token ids too), else those the batch leads.
void Ledger::mark_first_batch(const std::unordered_set<intptr_t>& inputs) {
  std::lock_guard<SpinLock> g(mu);
  for (auto& kv : live_entries) {
    Entry* e = kv.second;
    if (!e->scaled && e->category >= TRANSIENT_FROM && e->step == PRE_LOOP && !e->shape.empty() &&
        (inputs.empty() ? e->shape[0] == batch : inputs.count(e->key) > 0) && scales(e->shape)) {
      e->scaled = true;
      scaled_live += e->nbytes;
    }
  }
}

}  // namespace memprof
