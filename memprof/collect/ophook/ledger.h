// memprof's op hook, the ledger: an entry per live storage (its bytes, category, step, order of
// birth, module, shape and dtype, whether it scales with the batch) and the running sums kept at
// each birth and death (live bytes per category, the peak and its breakdown, the falls within a
// step, old storages still alive), so the peak is exact op by op.
//
// Every member is guarded by `mu`; the methods named `*_locked` expect the caller to hold it, the
// others take it. ledger.cpp keeps the sums, scaling.cpp the batch scaling, pack.cpp what autograd
// saves; marks.h finds and makes entries, hook.cpp feeds them.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/core/StorageImpl.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/SmallVector.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "categories.h"

namespace memprof {

// Parameters, gradients, optimizer state: the categories kept across iterations by design.
constexpr int PERSISTENT_MASK = (1 << TRANSIENT_FROM) - 1;

// The flags of touch() for Python: made now (Python adds its site), and not marked (Python
// watches its death). The module exports them, so native.py reads the same values.
constexpr int NEW = 1;
constexpr int FOREIGN = 2;

// Held for a few additions or one table lookup, almost never contended: a spin lock.
struct SpinLock {
  std::atomic_flag flag = ATOMIC_FLAG_INIT;
  void lock() { while (flag.test_and_set(std::memory_order_acquire)) {} }
  void unlock() { flag.clear(std::memory_order_release); }
};

// Pointers hash to themselves in libstdc++: mixed, or aligned addresses crowd a few buckets.
inline size_t mix(uint64_t h) {
  h *= 0x9E3779B97F4A7C15ULL;
  return static_cast<size_t>(h ^ (h >> 29));
}

// Where a storage was made, to recognise it between sampled steps: the same op (name), at the same
// position in the step (the op's index among the step's ops), as the same output, of the same bytes.
struct SiteKey {
  int64_t op_index;
  const char* op;
  int64_t nbytes;
  int32_t out;
  bool operator==(const SiteKey& o) const {
    return op_index == o.op_index && op == o.op && nbytes == o.nbytes && out == o.out;
  }
};
struct SiteKeyHash {
  size_t operator()(const SiteKey& k) const {
    return mix(static_cast<uint64_t>(k.op_index) ^ (reinterpret_cast<uintptr_t>(k.op) << 11) ^
               (static_cast<uint64_t>(k.nbytes) << 31) ^ (static_cast<uint64_t>(k.out) << 53));
  }
};

struct Ledger;

struct Entry {
  std::shared_ptr<Ledger> ledger;  // a death after the tracker is gone still finds its ledger
  void* data = nullptr;            // a marked storage's memory, for the allocator's deleter
  c10::DeleterFnPtr free_fn = nullptr;  // the deleter its mark replaced (the allocator's or the counter's)
  intptr_t key = 0;                // the StorageImpl's address, as Python's storage._cdata
  int64_t nbytes = 0;
  int64_t seq = 0;
  int64_t step = 0;
  int32_t module = 0;
  int32_t site = -1;  // an index into the Python tracker's sites
  int64_t birth_op = 0;              // the step's op index at its birth (see SiteKey)
  const char* birth_name = nullptr;  // the op that made it
  int32_t birth_out = -1;      // which of the op's outputs it is (-1: not known yet, saved before its op ended)
  bool saved_pending = false;  // saved before its op ended: its key is noted when the op ends
  bool derived_pending = false;  // made from a scaling storage before its op ended: noted then too
  int8_t category = OTHER;
  int8_t dtype = 0;
  bool scaled = false;
  bool old = false;     // created before this step and transient: a lingering candidate
  bool linger = false;  // named by the lingering watch: where it dies is noted
  bool marked = false;  // its DataPtr is ours (else Python reports its death)
  c10::SmallVector<int64_t, 4> shape;
  // Where the op hook saw it born, output position included (see SiteKey).
  bool birth_known() const { return birth_name != nullptr && birth_out >= 0; }
  SiteKey birth_site() const { return SiteKey{birth_op, birth_name, nbytes, birth_out}; }
};

// One entry as Python reads it, copied under the ledger's lock (Python objects are made out of it).
struct View {
  intptr_t key;
  int64_t nbytes, step, seq;
  int32_t site, module;
  int category;
  bool scaled;
  at::ScalarType dtype;
  c10::SmallVector<int64_t, 4> shape;
  explicit View(const Entry* e)
      : key(e->key), nbytes(e->nbytes), step(e->step), seq(e->seq), site(e->site), module(e->module),
        category(e->category), scaled(e->scaled), dtype(static_cast<at::ScalarType>(e->dtype)), shape(e->shape) {}
};

struct Ledger : std::enable_shared_from_this<Ledger> {
  SpinLock mu;
  std::unordered_map<intptr_t, Entry*> live_entries;
  int64_t live = 0, peak = 0, peak_seq = 0, peak_step = 0, step = PRE_LOOP, step_peak = 0, seq = 0;
  int64_t scaled_live = 0, old_bytes = 0, peak_watch_at = 0;
  double peak_watch_share = 0;  // old bytes below this share of live at the step's first high: no call
  bool rising = false;
  std::array<int64_t, NUM_CATEGORIES> cat{}, peak_cat{};
  std::vector<std::pair<int64_t, int64_t>> local_peaks;  // (live, scaled_live) before each fall
  std::unordered_map<intptr_t, int64_t> linger_at;         // candidate key -> index into local_peaks at its death
  int32_t module = 0;  // the innermost module running (an index into the Python tracker's names)
  // The modules running, innermost last: (module key, name index). Saved storages are charged to
  // each of them, once per step (saved_seen), in saved_bytes (module key -> bytes this step).
  std::vector<std::pair<int64_t, int32_t>> modules;
  std::unordered_map<int64_t, int64_t> saved_bytes;
  std::set<std::pair<int64_t, intptr_t>> saved_seen;
  int64_t site_min_bytes = 16 * 1024;
  // Sites between sampled steps: looked up in site_cache (see SiteKey) instead of asking Python.
  bool sample_sites = true;
  int64_t op_index = 0;  // ops seen this step
  std::unordered_map<SiteKey, int32_t, SiteKeyHash> site_cache;
  // Saved tensors between sampled steps, where the pack hook is off: a storage born where one was
  // saved on a sampled step (same op, same place in the step, same bytes) is an activation.
  bool infer_saved = false;
  std::unordered_set<SiteKey, SiteKeyHash> saved_births;
  // Batch scaling between sampled steps, where the op hook reads no op's inputs (boxing them costs
  // more than the rest of the hook): a storage born where one made from a scaling storage was
  // born on a sampled step (see SiteKey) is made from one too (taint).
  std::unordered_set<SiteKey, SiteKeyHash> derived_births;
  void note_derived_locked(const Entry* e);
  bool born_derived(const Entry* e);  // takes the lock
  // Batch scaling (memprof.collect.storage.StorageTracker._scales): written by Python, rarely.
  int64_t batch = 0;
  std::unordered_set<int64_t> fixed_numels;
  std::set<std::vector<int64_t>> fixed_shapes;

  ~Ledger();

  // -- the sums (ledger.cpp) -----------------------------------------------------------------------
  // A birth. True: a new high past the watch's mark (the caller calls Python).
  bool add_locked(Entry* e);
  void remove_locked(Entry* e);  // a death
  // Move `e` to `category`, only from the categories in `only_from_mask` (0: from any).
  void recategorise_locked(Entry* e, int category, int only_from_mask);
  // A storage not marked has died (Python's weak reference): count it.
  void release(intptr_t key);
  void set_site(intptr_t key, int32_t site);
  int64_t seq_of(intptr_t key);  // -1: not live
  std::optional<View> view(intptr_t key);
  std::vector<View> views();  // oldest first
  int64_t count();
  std::vector<int64_t> read_cat();
  std::vector<int64_t> read_peak_cat();
  std::vector<std::pair<int64_t, int64_t>> read_local_peaks();

  // -- step boundaries and lingering candidates (ledger.cpp) ---------------------------------------
  void begin_step(int64_t new_step, int64_t min_old_bytes);
  std::vector<std::array<int64_t, 4>> old_entries(int64_t min_bytes);
  void set_linger(const std::vector<intptr_t>& keys);
  int64_t linger_index(intptr_t key);

  // -- modules and what they save (ledger.cpp) -----------------------------------------------------
  void enter_module(int64_t key, int32_t name);
  void leave_module();
  void clear_modules();
  int64_t saved_bytes_of(int64_t key);
  std::unordered_map<int64_t, int64_t> take_saved_bytes();

  // -- batch scaling (scaling.cpp) -----------------------------------------------------------------
  bool scales(c10::IntArrayRef shape) const;  // under the lock
  bool param_sized(c10::IntArrayRef shape) const;  // under the lock
  bool input_scales(c10::StorageImpl* s);  // takes the lock
  void taint(Entry* e, bool derived);  // takes the lock: made from a storage that scales
  void set_scaling(int64_t batch_size, const std::vector<int64_t>& numels,
                   const std::vector<std::vector<int64_t>>& sorted_shapes);
  void mark_first_batch(const std::unordered_set<intptr_t>& inputs);

  // -- saved tensors (pack.cpp) --------------------------------------------------------------------
  void note_saved_locked(Entry* e);  // autograd saved `e`: an activation, charged to the modules
  void note_output_locked(Entry* e, const char* op, int32_t out);  // `e`'s op ended: its output position
  // Born (birth_known) where a storage was saved on a sampled step.
  bool born_where_saved_locked(const Entry* e) const;
  void set_infer_saved(bool on);
};

// A setting or figure of the ledger, read or written under its lock: what Python's properties call.
template <typename>
struct FieldOf;
template <typename T>
struct FieldOf<T Ledger::*> {
  using type = T;
};

template <auto Field>
typename FieldOf<decltype(Field)>::type get_field(Ledger& l) {
  std::lock_guard<SpinLock> g(l.mu);
  return l.*Field;
}

template <auto Field>
void set_field(Ledger& l, typename FieldOf<decltype(Field)>::type value) {
  std::lock_guard<SpinLock> g(l.mu);
  l.*Field = value;
}

}  // namespace memprof
