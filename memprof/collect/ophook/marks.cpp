// Marking storages and making their entries (marks.h).
#include "marks.h"

#include "counter.h"

#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/ScalarType.h>

#include <pthread.h>

namespace memprof {

Marks marks;

namespace {

// A forked child (a DataLoader worker) has one thread: a lock another thread held at the fork
// would never be released there, and the child's first death would wait for it forever.
void unlock_marks_in_child() { marks.mu.unlock(); }

// Fill an entry from the tensor (not yet in the ledger).
void fill(Entry* e, c10::StorageImpl* s, const at::Tensor& t, int category, int64_t step) {
  e->key = reinterpret_cast<intptr_t>(s);
  e->nbytes = static_cast<int64_t>(s->nbytes());
  e->step = step;
  e->category = static_cast<int8_t>(category);
  e->dtype = static_cast<int8_t>(t.scalar_type());
  const auto sizes = t.sizes();
  e->shape.assign(sizes.begin(), sizes.end());
}

// Swap the deleter of a default-CPU-allocator storage for on_death, which counts the death and calls
// the allocator's. The context stays the data pointer, as copy-on-write clones require. False: not
// ours to mark (another allocator's storage: its deleter may be checked by that allocator).
bool mark(c10::StorageImpl* s, Entry* e) {
  if (marks.cpu_deleter == nullptr) return false;
  at::DataPtr& dp = s->_mutable_data_ptr_no_checks();
  void* data = dp.get();
  if (data == nullptr || dp.get_context() != data) return false;
  {
    std::lock_guard<SpinLock> g(marks.mu);
    // The allocator's own deleter, or the CPU counter's (counter.h): on_death calls the one it had.
    if (dp.compare_exchange_deleter(marks.cpu_deleter, &on_death)) {
      e->free_fn = marks.cpu_deleter;
    } else if (dp.compare_exchange_deleter(&counted_delete, &on_death)) {
      e->free_fn = &counted_delete;
    } else {
      return false;
    }
    marks.by_data[data] = e;
  }
  e->data = data;
  e->marked = true;
  return true;
}

}  // namespace

void prepare_marks() {
  if (marks.cpu_deleter != nullptr) return;
  c10::DeleterFnPtr d = at::empty({1}).storage().data_ptr().get_deleter();
  marks.cpu_deleter = d == &counted_delete ? counted_inner_deleter() : d;  // the allocator's, not the counter's
  pthread_atfork(nullptr, nullptr, &unlock_marks_in_child);
}

void on_death(void* data) {
  Entry* e = nullptr;
  c10::DeleterFnPtr release = marks.cpu_deleter;
  {
    std::lock_guard<SpinLock> g(marks.mu);
    auto it = marks.by_data.find(data);
    if (it != marks.by_data.end()) {
      e = it->second;
      marks.by_data.erase(it);
    }
  }
  if (e != nullptr) {
    if (e->free_fn != nullptr) release = e->free_fn;
    if (auto ledger = e->ledger) {
      std::lock_guard<SpinLock> g(ledger->mu);
      ledger->remove_locked(e);
    }
    delete e;
  }
  release(data);
}

c10::StorageImpl* storage_of(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return nullptr;
  c10::StorageImpl* s = t.storage().unsafeGetStorageImpl();
  if (s->nbytes() == 0 || s->device_type() == c10::DeviceType::Meta) return nullptr;
  return s;
}

Entry* find_or_add(Ledger* ledger, c10::StorageImpl* s, const at::Tensor& t, int category, int64_t step,
                   bool* made, bool* new_high, int64_t birth_op, const char* birth_name, int32_t birth_out) {
  *made = false;
  *new_high = false;
  Entry* e = marked_entry(s);
  const intptr_t key = reinterpret_cast<intptr_t>(s);
  if (e != nullptr && e->ledger.get() == ledger && e->key == key) return e;
  Entry* fresh = nullptr;
  if (e != nullptr) {
    // Marked by an earlier ledger (an earlier tracker in this process), or the data of a storage
    // marked here moved into a new storage (autograd does it): the old one is dead, this one new.
    if (auto old = e->ledger) {
      std::lock_guard<SpinLock> g(old->mu);
      old->remove_locked(e);
    }
    e->ledger = ledger->shared_from_this();
    e->site = -1;
    e->scaled = e->old = e->linger = false;
    fill(e, s, t, category, step);
    fresh = e;
  } else {
    {
      std::lock_guard<SpinLock> g(ledger->mu);
      auto it = ledger->live_entries.find(key);
      if (it != ledger->live_entries.end()) return it->second;  // a foreign storage, known
    }
    fresh = new Entry();
    fresh->ledger = ledger->shared_from_this();
    fill(fresh, s, t, category, step);
    if (!mark(s, fresh)) fresh->ledger.reset();  // foreign: found in the table, released by Python
  }
  std::lock_guard<SpinLock> g(ledger->mu);
  fresh->module = ledger->module;
  if (category == OTHER && step != PRE_LOOP && ledger->batch > 0) fresh->scaled = ledger->scales(fresh->shape);
  fresh->birth_op = birth_op;
  fresh->birth_name = birth_name;
  fresh->birth_out = birth_out;
  fresh->saved_pending = false;
  // Only where autograd records (not under no_grad or inference_mode) is anything saved.
  if (category == OTHER && ledger->infer_saved && fresh->birth_known() && at::GradMode::is_enabled() &&
      !c10::InferenceMode::is_enabled() && ledger->born_where_saved_locked(fresh)) {
    fresh->category = ACTIVATIONS;  // saved here on sampled steps (the scaling as an OTHER's)
  }
  *new_high = ledger->add_locked(fresh);
  *made = true;
  return fresh;
}

}  // namespace memprof
