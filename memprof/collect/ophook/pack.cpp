// What autograd saves for backward: the saved-tensor pack hook and, between sampled steps where
// the hook is off, the inference of saved storages from where they were born (pack.h).
#include "pack.h"

#include "hook.h"
#include "marks.h"

namespace memprof {

namespace {

constexpr size_t kMaxSavedBirths = 100000;  // a loop that never repeats: the cache starts again

}  // namespace

bool Ledger::born_where_saved_locked(const Entry* e) const {
  return e->birth_known() && saved_births.count(e->birth_site()) > 0;
}

// An activation (if not already categorised); born this step or at the end of the last (a
// loader's next batch), its place in the loop is noted for the steps without the pack hook.
// Charged to each module running, once per step.
void Ledger::note_saved_locked(Entry* e) {
  if (e->category == OTHER) {
    recategorise_locked(e, ACTIVATIONS, 0);
    if (e->step >= step - 1 && e->birth_name != nullptr) {
      if (saved_births.size() > kMaxSavedBirths) saved_births.clear();
      if (e->birth_out >= 0) {
        saved_births.insert(e->birth_site());
      } else {
        e->saved_pending = true;  // its op has not ended: noted then (note_output_locked)
      }
    }
  }
  for (const auto& m : modules) {
    if (saved_seen.emplace(m.first, e->key).second) saved_bytes[m.first] += e->nbytes;
  }
}

// Made by op `op` and saved before it ended: now its output position is known.
void Ledger::note_output_locked(Entry* e, const char* op, int32_t out) {
  e->birth_out = out;
  if (e->saved_pending) saved_births.insert(SiteKey{e->birth_op, op, e->nbytes, out});
  if (e->derived_pending) {
    e->derived_pending = false;
    note_derived_locked(e);
  }
}

void Ledger::note_derived_locked(const Entry* e) {
  if (!e->birth_known()) return;
  if (derived_births.size() > kMaxSavedBirths) derived_births.clear();
  derived_births.insert(e->birth_site());
}

bool Ledger::born_derived(const Entry* e) {
  std::lock_guard<SpinLock> g(mu);
  return e->birth_known() && derived_births.count(e->birth_site()) > 0;
}

void Ledger::set_infer_saved(bool on) {
  std::lock_guard<SpinLock> g(mu);
  if (on && !infer_saved) {
    // The pack hook stops: what the last step's end made where saved storages are made (a
    // loader's next batch) would have been saved by this step. It is, by inference.
    for (auto& kv : live_entries) {
      Entry* e = kv.second;
      if (e->category == OTHER && e->step >= step - 1 && born_where_saved_locked(e)) {
        recategorise_locked(e, ACTIVATIONS, 0);
      }
    }
  }
  infer_saved = on;
}

at::Tensor pack(const std::shared_ptr<Ledger>& ledger, const at::Tensor& t) {
  try {
    if (c10::StorageImpl* s = storage_of(t)) {
      Ledger* l = ledger.get();
      bool made = false, new_high = false;
      // Born here, before its op ends: its key is the one the callback would give it at the end.
      ThreadState& ts = this_thread();
      Entry* e = find_or_add(l, s, t, OTHER, l->step, &made, &new_high, l->op_index + 1, ts.running_op());
      const bool derived = !ts.derived_stack.empty() && ts.derived_stack.back();
      if (made) {
        l->taint(e, derived);
        if (derived) e->derived_pending = true;  // its site is known when its op ends
      }
      {
        std::lock_guard<SpinLock> g(l->mu);
        l->note_saved_locked(e);
      }
      // The Python parts through the installed callbacks: only this ledger's, while installed.
      if (made && active_ledger() == l) python_parts(ts, l, e, t.storage(), new_high);
    }
  } catch (const std::exception&) {
    count_error();  // never break the user's forward
  }
  return t.detach();
}

}  // namespace memprof
