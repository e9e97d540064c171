// memprof's op hook: the detailed mode's storage ledger, kept in C++.
//
// A thread-local RecordFunction callback sees every op's outputs, as a Python TorchDispatchMode
// would, for a tenth of its cost. Each new storage gets an entry in the active Ledger: its bytes,
// category, step, order of birth, module, shape and dtype, and whether it scales with the batch.
// The running sums (live bytes per category, the peak and its breakdown, the falls within a step,
// old storages still alive) are kept at each birth and death, so the peak is exact op by op.
//
// A storage of the default CPU allocator is marked by swapping its DataPtr for one whose context
// is its entry and whose deleter counts the death, then frees the memory with the allocator's own
// deleter: views, in-place ops and outputs on known storages are recognised by their deleter, with
// no lookup, and no Python runs at a birth or a death. Other storages (CUDA's caching allocator
// recognises its own deleter, pinned and shared memory likewise) keep their DataPtr: their entry
// is found in a table, and Python's weak reference to the storage reports their death (release).
//
// Python is called only for what it must add: the user's line for a large storage, a weak
// reference for a storage not marked, and a new high for the lingering-tensor watch.
//
// It reports what a dispatch mode sees, no more: the outputs of ops the caller (or a composite
// op's decomposition) called, not the scratch tensors a kernel makes for itself inside an op.
// An op without a CompositeImplicitAutograd kernel is opaque: ops called inside it are hidden.
//
// Built on first use by memprof.collect.ophook with torch.utils.cpp_extension.
#include <torch/extension.h>
#include <ATen/record_function.h>
#include <c10/util/SmallVector.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/Storage.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <tuple>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

namespace py = pybind11;

constexpr int kCategories = 5;
constexpr int ACTIVATIONS = 3;  // categories >= this are transient (memprof.report.model.CATEGORIES)
constexpr int OTHER = 4;
constexpr int PERSISTENT_MASK = 0b111;  // parameters, gradients, optimizer state
constexpr int64_t PRE_LOOP = -1;

// New/foreign flags returned to Python by Ledger::touch.
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
  intptr_t key = 0;                // the StorageImpl's address, as Python's storage._cdata
  int64_t nbytes = 0;
  int64_t seq = 0;
  int64_t step = 0;
  int32_t module = 0;
  int32_t site = -1;  // an index into the Python tracker's sites
  int64_t birth_op = 0;        // the step's op index at its birth (see SiteKey)
  const char* birth_name = nullptr;  // the op that made it
  int32_t birth_out = -1;      // which of the op's outputs it is (-1: not known yet, saved before its op ended)
  bool saved_pending = false;  // saved before its op ended: its key is noted when the op ends
  int8_t category = OTHER;
  int8_t dtype = 0;
  bool scaled = false;
  bool old = false;     // created before this step and transient: a lingering candidate
  bool linger = false;  // named by the lingering watch: where it dies is noted
  bool marked = false;  // its DataPtr is ours (else Python reports its death)
  c10::SmallVector<int64_t, 4> shape;
};

c10::DeleterFnPtr cpu_deleter = nullptr;  // the default CPU allocator's, read from a fresh tensor
void on_death(void* data);

struct Ledger : std::enable_shared_from_this<Ledger> {
  SpinLock mu;
  std::unordered_map<intptr_t, Entry*> live_entries;
  int64_t live = 0, peak = 0, peak_seq = 0, peak_step = 0, step = PRE_LOOP, step_peak = 0, seq = 0;
  int64_t scaled_live = 0, old_bytes = 0, peak_watch_at = 0;
  double peak_watch_share = 0;  // old bytes below this share of live at the step's first high: no call
  bool rising = false;
  std::array<int64_t, kCategories> cat{}, peak_cat{};
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
  // Batch scaling (memprof.collect.storage.StorageTracker._scales): written by Python, rarely.
  int64_t batch = 0;
  std::unordered_set<int64_t> fixed_numels;
  std::set<std::vector<int64_t>> fixed_shapes;

  ~Ledger() {
    // Marked entries keep their ledger alive: only foreign ones (Python watches them) are left.
    for (auto& kv : live_entries) {
      if (!kv.second->marked) delete kv.second;
    }
  }

  bool scales(c10::IntArrayRef shape) const {
    const int64_t b = batch;
    if (b <= 0 || shape.empty()) return false;
    const bool has_b = std::find(shape.begin(), shape.end(), b) != shape.end();
    if (!((shape[0] >= b && shape[0] % b == 0) || has_b)) return false;
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    if (!fixed_numels.count(numel)) return true;
    std::vector<int64_t> sorted(shape.begin(), shape.end());
    std::sort(sorted.begin(), sorted.end());
    return !fixed_shapes.count(sorted);
  }

  // A birth, under the lock. True: a new high past the watch's mark (the caller calls Python).
  bool add_locked(Entry* e) {
    e->seq = ++seq;
    live_entries[e->key] = e;
    live += e->nbytes;
    cat[e->category] += e->nbytes;
    if (e->scaled) scaled_live += e->nbytes;
    rising = true;
    if (live > step_peak) {
      step_peak = live;
      if (live > peak) {
        peak = live;
        peak_seq = e->seq;
        peak_step = e->step;
        peak_cat = cat;
      }
      if (live <= peak_watch_at) return false;
      if (peak_watch_at == 0 && static_cast<double>(old_bytes) < peak_watch_share * static_cast<double>(live)) {
        // The step's first new high, and nothing old worth naming: disarmed until the next step
        // without a call (old storages only die within a step, and the watch fires only higher).
        peak_watch_at = INT64_MAX;
        return false;
      }
      return true;
    }
    return false;
  }

  // A death, under the lock.
  void remove_locked(Entry* e) {
    auto it = live_entries.find(e->key);
    if (it == live_entries.end() || it->second != e) return;
    live_entries.erase(it);
    const int64_t n = e->nbytes;
    if (rising) {
      rising = false;
      local_peaks.emplace_back(live, scaled_live);
    }
    live -= n;
    cat[e->category] -= n;
    if (e->scaled) scaled_live -= n;
    if (e->old) {
      old_bytes -= n;
      if (e->linger) linger_at[e->key] = static_cast<int64_t>(local_peaks.size());
    }
  }

  void recategorise_locked(Entry* e, int category, int only_from_mask) {
    const int old = e->category;
    if (old == category || (only_from_mask && !(only_from_mask & (1 << old)))) return;
    const int64_t n = e->nbytes;
    cat[old] -= n;
    cat[category] += n;
    if (e->seq <= peak_seq) {  // alive now and created before the peak: it was part of the peak
      peak_cat[old] -= n;
      peak_cat[category] += n;
    }
    if (PERSISTENT_MASK & (1 << category)) {
      if (e->scaled) {
        e->scaled = false;
        scaled_live -= n;
      }
      if (e->old) {
        e->old = false;
        old_bytes -= n;
      }
    }
    e->category = static_cast<int8_t>(category);
  }
};

// The marked storages' entries, by data pointer: the deleter is given only that.
SpinLock registry_mu;
std::unordered_map<void*, Entry*> by_data;

// The entry of a storage marked by a ledger (ours by its deleter), else nullptr.
inline Entry* marked_entry(c10::StorageImpl* s) {
  const at::DataPtr& dp = s->data_ptr();
  if (dp.get_deleter() != &on_death) return nullptr;
  std::lock_guard<SpinLock> g(registry_mu);
  auto it = by_data.find(dp.get());
  return it == by_data.end() ? nullptr : it->second;
}

void on_death(void* data) {
  Entry* e = nullptr;
  {
    std::lock_guard<SpinLock> g(registry_mu);
    auto it = by_data.find(data);
    if (it != by_data.end()) {
      e = it->second;
      by_data.erase(it);
    }
  }
  if (e != nullptr) {
    if (auto ledger = e->ledger) {
      std::lock_guard<SpinLock> g(ledger->mu);
      ledger->remove_locked(e);
    }
    delete e;
  }
  cpu_deleter(data);
}

// Swap the deleter of a default-CPU-allocator storage for on_death, which counts the death and calls
// the allocator's. The context stays the data pointer, as copy-on-write clones require. False: not
// ours to mark (another allocator's storage: its deleter may be checked by that allocator).
bool mark(c10::StorageImpl* s, Entry* e) {
  if (cpu_deleter == nullptr) return false;
  at::DataPtr& dp = s->_mutable_data_ptr_no_checks();
  void* data = dp.get();
  if (data == nullptr || dp.get_context() != data) return false;
  {
    std::lock_guard<SpinLock> g(registry_mu);
    if (!dp.compare_exchange_deleter(cpu_deleter, &on_death)) return false;
    by_data[data] = e;
  }
  e->data = data;
  e->marked = true;
  return true;
}

// What the callback and Python share: the active ledger and its Python callbacks (set by install).
std::shared_ptr<Ledger> active;  // owned here while installed; the callback reads active_raw
std::atomic<Ledger*> active_raw{nullptr};
PyObject* site_cb = nullptr;     // () -> int: the user's line, as an index (-1: none)
PyObject* foreign_cb = nullptr;  // (storage, key) -> None: watch this storage's death
PyObject* peak_cb = nullptr;     // (live) -> None: a new high of the step past the watch's mark
at::CallbackHandle handle = 0;
std::atomic<int64_t> errors{0};

// An exception from the Python side can't go through the op (its end runs in a destructor). A
// signal handler's (Ctrl+C's KeyboardInterrupt, memprof's SIGTERM unwinding) must not be lost: the
// signal is raised again, and Python acts on it at its next chance, in the user's code. Anything
// else is counted (error_count) and dropped.
void redeliver_or_count() {
  if (PyErr_Occurred() == nullptr) {
    ++errors;
  } else if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)) {
    PyErr_Clear();
    PyErr_SetInterrupt();
  } else if (!PyErr_ExceptionMatches(PyExc_Exception)) {
    PyErr_Clear();
#if PY_VERSION_HEX >= 0x030A0000
    PyErr_SetInterruptEx(SIGTERM);
#endif
  } else {
    ++errors;
    PyErr_Clear();
  }
}

// Call a Python callback with the GIL; its result (a new reference) or nullptr, errors handled.
PyObject* call_python(PyObject* fn, PyObject* const* args, size_t nargs) {
  if (fn == nullptr) return nullptr;
  PyObject* r = PyObject_Vectorcall(fn, args, nargs, nullptr);
  if (r == nullptr) redeliver_or_count();
  return r;
}

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
  int opaque_depth = 0;
  // Keyed by the operator's name and overload strings, which live as long as the operator.
  std::unordered_map<std::pair<const char*, const char*>, bool, PairHash> opaque_cache;
};
thread_local ThreadState tls;

bool is_opaque(ThreadState& ts, const at::RecordFunction& fn) {
  auto key = std::make_pair(fn.name(), fn.overload_name());
  auto it = ts.opaque_cache.find(key);
  if (it != ts.opaque_cache.end()) return it->second;
  bool opaque = false;
  if (auto name = fn.operator_name()) {
    auto op = c10::Dispatcher::singleton().findOp(*name);
    opaque = op.has_value() && !op->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd);
  }
  ts.opaque_cache.emplace(key, opaque);
  return opaque;
}

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

// Count `s` if new: the entry, and whether it was made now (`made`) and is a new high past the
// peak watch's mark (`new_high`). Not marked when made: Python must watch its death.
Entry* find_or_add(Ledger* ledger, c10::StorageImpl* s, const at::Tensor& t, int category,
                   int64_t step, bool* made, bool* new_high, int64_t birth_op = 0, const char* birth_name = nullptr,
                   int32_t birth_out = -1) {
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
  if (category == OTHER && ledger->infer_saved && birth_name != nullptr && birth_out >= 0 &&
      at::GradMode::is_enabled() && !c10::InferenceMode::is_enabled() &&
      ledger->saved_births.count(SiteKey{birth_op, birth_name, fresh->nbytes, birth_out})) {
    fresh->category = ACTIVATIONS;  // saved here on sampled steps (the scaling as an OTHER's)
  }
  *new_high = ledger->add_locked(fresh);
  *made = true;
  return fresh;
}

// After a birth seen by the op hook: the Python parts (site, death watch, new high), with the GIL.
// `op`: the op that made it (nullptr: a call from Python), for the site cache.
void python_parts(ThreadState& ts, Ledger* ledger, Entry* e, const c10::Storage& storage,
                  bool watch_new_high, const char* op = nullptr, int32_t out = 0) {
  bool want_site = e->nbytes >= ledger->site_min_bytes && site_cb != nullptr;
  const bool foreign = !e->marked;
  const bool new_high = watch_new_high && peak_cb != nullptr;
  const SiteKey key{ledger->op_index, op, e->nbytes, out};
  if (want_site && op != nullptr && !ledger->sample_sites) {
    std::lock_guard<SpinLock> g(ledger->mu);
    auto it = ledger->site_cache.find(key);
    if (it != ledger->site_cache.end()) {
      e->site = it->second;
      want_site = false;
    }
  }
  if (!(want_site || foreign || new_high)) return;
  py::gil_scoped_acquire gil;
  ts.busy = true;
  if (want_site) {
    if (PyObject* r = call_python(site_cb, nullptr, 0)) {
      const long v = PyLong_AsLong(r);
      if (v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
      } else {
        e->site = static_cast<int32_t>(v);
        if (op != nullptr) {
          std::lock_guard<SpinLock> g(ledger->mu);
          ledger->site_cache[key] = e->site;
        }
      }
      Py_DECREF(r);
    }
  }
  if (foreign && foreign_cb != nullptr) {
    PyObject* args[2] = {THPStorage_Wrap(storage), PyLong_FromSsize_t(e->key)};
    if (args[0] && args[1]) Py_XDECREF(call_python(foreign_cb, args, 2));
    else redeliver_or_count();
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
  }
  if (new_high) {
    int64_t live;
    {
      std::lock_guard<SpinLock> g(ledger->mu);
      live = ledger->live;
    }
    PyObject* arg = PyLong_FromLongLong(live);
    if (arg != nullptr) {
      Py_XDECREF(call_python(peak_cb, &arg, 1));
      Py_DECREF(arg);
    }
  }
  ts.busy = false;
}

// Output `out` of op `op`, which just ended.
void see(ThreadState& ts, Ledger* ledger, const at::Tensor& t, const char* op, int32_t out) {
  if (!t.defined() || !t.has_storage()) return;
  const c10::Storage& storage = t.storage();
  c10::StorageImpl* s = storage.unsafeGetStorageImpl();
  if (s->nbytes() == 0 || s->device_type() == c10::DeviceType::Meta) return;
  // The common case, a view or an in-place op: a storage this ledger marked, found by its deleter.
  Entry* e = marked_entry(s);
  if (e != nullptr && e->ledger.get() == ledger && e->key == reinterpret_cast<intptr_t>(s)) {
    if (e->birth_out < 0 && e->birth_op == ledger->op_index && e->birth_name == op) {
      // Made by this op and saved before it ended: now its output position is known.
      std::lock_guard<SpinLock> g(ledger->mu);
      e->birth_out = out;
      if (e->saved_pending) ledger->saved_births.insert(SiteKey{e->birth_op, op, e->nbytes, out});
    }
    return;
  }
  bool made = false, new_high = false;
  try {
    e = find_or_add(ledger, s, t, OTHER, ledger->step, &made, &new_high, ledger->op_index, op, out);
  } catch (const std::exception&) {
    ++errors;  // the sizes of an exotic tensor: not counted, and said (error_count)
    return;
  }
  if (made) python_parts(ts, ledger, e, storage, new_high, op, out);
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  ThreadState& ts = tls;
  const bool opaque = is_opaque(ts, fn);
  ts.opaque_stack.push_back(opaque);
  ts.op_stack.push_back(fn.name());
  if (opaque) ++ts.opaque_depth;
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  ThreadState& ts = tls;
  if (!ts.opaque_stack.empty()) {
    if (ts.opaque_stack.back()) --ts.opaque_depth;
    ts.opaque_stack.pop_back();
    ts.op_stack.pop_back();
  }
  if (ts.busy || ts.opaque_depth > 0) return;
  // The Python tracker owns its ledger: uninstall clears this pointer, not the ledger.
  Ledger* ledger = active_raw.load(std::memory_order_acquire);
  if (ledger == nullptr) return;
  ++ledger->op_index;  // a key of the site cache: no lock, a racing thread only costs a lookup
  const char* op = fn.name();
  int32_t out = 0;
  for (const c10::IValue& v : fn.outputs()) {
    if (v.isTensor()) {
      see(ts, ledger, v.toTensor(), op, out++);
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) see(ts, ledger, t, op, out++);
    } else if (v.isList()) {
      for (const c10::IValue& e : v.toListRef()) {
        if (e.isTensor()) see(ts, ledger, e.toTensor(), op, out++);
      }
    }
  }
}

void set_callback(PyObject** slot, const py::object& fn) {
  PyObject* old = *slot;
  *slot = fn.is_none() ? nullptr : fn.inc_ref().ptr();
  Py_XDECREF(old);
}

// -- what Python calls ----------------------------------------------------------------------------

// Count this thread's ops (and those of autograd's threads working for it) into `ledger`.
// A forked child (a DataLoader worker) has one thread: a lock another thread held at the fork
// would never be released there, and the child's first death would wait for it forever.
void after_fork_in_child() {
  registry_mu.unlock();
  if (Ledger* l = active_raw.load()) l->mu.unlock();
}

void install(const std::shared_ptr<Ledger>& ledger, py::object site, py::object foreign, py::object peak) {
  if (cpu_deleter == nullptr) {
    cpu_deleter = at::empty({1}).storage().data_ptr().get_deleter();
    pthread_atfork(nullptr, nullptr, &after_fork_in_child);
  }
  if (handle != 0) at::removeCallback(handle);
  active = ledger;
  active_raw.store(ledger.get(), std::memory_order_release);
  set_callback(&site_cb, site);
  set_callback(&foreign_cb, foreign);
  set_callback(&peak_cb, peak);
  handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).needsOutputs(true).scopes({at::RecordScope::FUNCTION}));
}

void uninstall() {
  if (handle != 0) at::removeCallback(handle);
  handle = 0;
  active_raw.store(nullptr, std::memory_order_release);
  active.reset();
  set_callback(&site_cb, py::none());
  set_callback(&foreign_cb, py::none());
  set_callback(&peak_cb, py::none());
}

// The storage of a tensor; nullptr when it has none or no bytes.
c10::StorageImpl* storage_of(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return nullptr;
  c10::StorageImpl* s = t.storage().unsafeGetStorageImpl();
  if (s->nbytes() == 0 || s->device_type() == c10::DeviceType::Meta) return nullptr;
  return s;
}

// Count a tensor's storage if new (created with `category`, at `step`), then, if `to` >= 0, move
// it to category `to` (only from the categories in `only_from_mask`, 0: from any).
// Returns (key, bytes, flags): flags NEW (made now: Python adds its site) and FOREIGN (made now and
// not marked: Python watches its death). (0, 0, 0): no storage to count.
py::tuple touch(const std::shared_ptr<Ledger>& ledger, const at::Tensor& t, int category, int64_t step, int to,
                int only_from_mask) {
  c10::StorageImpl* s = storage_of(t);
  if (s == nullptr) return py::make_tuple(0, 0, 0);
  bool made = false, new_high = false;
  Entry* e = find_or_add(ledger.get(), s, t, category, step, &made, &new_high);
  int flags = made ? NEW : 0;
  if (made && !e->marked) flags |= FOREIGN;
  intptr_t key;
  int64_t nbytes;
  {
    std::lock_guard<SpinLock> g(ledger->mu);
    if (to >= 0) ledger->recategorise_locked(e, to, only_from_mask);
    key = e->key;
    nbytes = e->nbytes;
  }
  // Python objects are made out of the lock: a garbage collection may run, and free storages.
  return py::make_tuple(key, nbytes, flags);
}

// The saved-tensor pack hook: autograd saves `t` for backward. Its storage is an activation (if
// not already categorised), counted now if new (autograd saves an op's output before the op ends,
// when the callback sees it), and charged to each module running, once per step. Returns what
// autograd keeps: `t` detached (itself, it would hold its own graph node in a reference cycle).
at::Tensor pack(const std::shared_ptr<Ledger>& ledger, const at::Tensor& t) {
  try {
    if (c10::StorageImpl* s = storage_of(t)) {
      Ledger* l = ledger.get();
      bool made = false, new_high = false;
      // Born here, before its op ends: its key is the one the callback would give it at the end.
      ThreadState& ts = tls;
      const char* running = ts.op_stack.empty() ? nullptr : ts.op_stack.back();
      Entry* e = find_or_add(l, s, t, OTHER, l->step, &made, &new_high, l->op_index + 1, running);
      {
        std::lock_guard<SpinLock> g(l->mu);
        if (e->category == OTHER) {
          l->recategorise_locked(e, ACTIVATIONS, 0);
          // Born this step or at the end of the last (a loader's next batch): a position in the loop.
          if (e->step >= l->step - 1 && e->birth_name != nullptr) {
            if (l->saved_births.size() > 100000) l->saved_births.clear();  // a loop that never repeats
            if (e->birth_out >= 0) {
              l->saved_births.insert(SiteKey{e->birth_op, e->birth_name, e->nbytes, e->birth_out});
            } else {
              e->saved_pending = true;  // its op has not ended: noted then (see)
            }
          }
        }
        for (const auto& m : l->modules) {
          if (l->saved_seen.emplace(m.first, e->key).second) l->saved_bytes[m.first] += e->nbytes;
        }
      }
      // The Python parts through the installed callbacks: only this ledger's, while installed.
      if (made && active_raw.load(std::memory_order_acquire) == l) python_parts(tls, l, e, t.storage(), new_high);
    }
  } catch (const std::exception&) {
    ++errors;  // never break the user's forward
  }
  return t.detach();
}

// One entry as Python reads it, copied under the ledger's lock; made into Python objects out of it.
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

// (key, nbytes, category, step, seq, site, module, scaled, shape, dtype)
py::tuple as_tuple(const View& v) {
  py::tuple shape(v.shape.size());
  for (size_t i = 0; i < v.shape.size(); ++i) shape[i] = py::int_(v.shape[i]);
  PyObject* dtype = reinterpret_cast<PyObject*>(torch::getTHPDtype(v.dtype));
  return py::make_tuple(v.key, v.nbytes, v.category, v.step, v.seq, v.site, v.module, v.scaled, shape,
                        py::reinterpret_borrow<py::object>(dtype));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "memprof's op hook: the detailed mode's storage ledger, in C++";
  py::class_<Ledger, std::shared_ptr<Ledger>>(m, "Ledger")
      .def(py::init<>())
      .def_property_readonly("live", [](Ledger& l) { std::lock_guard<SpinLock> g(l.mu); return l.live; })
      .def_property_readonly("peak", [](Ledger& l) { std::lock_guard<SpinLock> g(l.mu); return l.peak; })
      .def_property_readonly("peak_seq", [](Ledger& l) { std::lock_guard<SpinLock> g(l.mu); return l.peak_seq; })
      .def_property_readonly("peak_step", [](Ledger& l) { std::lock_guard<SpinLock> g(l.mu); return l.peak_step; })
      .def_property_readonly("step_peak", [](Ledger& l) { std::lock_guard<SpinLock> g(l.mu); return l.step_peak; })
      .def_property_readonly("seq", [](Ledger& l) { std::lock_guard<SpinLock> g(l.mu); return l.seq; })
      .def_property_readonly("scaled_live", [](Ledger& l) { std::lock_guard<SpinLock> g(l.mu); return l.scaled_live; })
      .def_property_readonly("old_bytes", [](Ledger& l) { std::lock_guard<SpinLock> g(l.mu); return l.old_bytes; })
      .def_property_readonly("count", [](Ledger& l) { std::lock_guard<SpinLock> g(l.mu); return l.live_entries.size(); })
      .def_property_readonly("cat", [](Ledger& l) {
        std::lock_guard<SpinLock> g(l.mu);
        return std::vector<int64_t>(l.cat.begin(), l.cat.end());
      })
      .def_property_readonly("peak_cat", [](Ledger& l) {
        std::lock_guard<SpinLock> g(l.mu);
        return std::vector<int64_t>(l.peak_cat.begin(), l.peak_cat.end());
      })
      .def_property_readonly("local_peaks", [](Ledger& l) {
        std::lock_guard<SpinLock> g(l.mu);
        return l.local_peaks;
      }, "(live, scaled live) before each fall of this step")
      .def_property("step",
          [](Ledger& l) { return l.step; },
          [](Ledger& l, int64_t s) { std::lock_guard<SpinLock> g(l.mu); l.step = s; })
      .def_property("module",
          [](Ledger& l) { return l.module; },
          [](Ledger& l, int32_t m) { l.module = m; })
      .def_property("infer_saved",
          [](Ledger& l) { return l.infer_saved; },
          [](Ledger& l, bool b) {
            std::lock_guard<SpinLock> g(l.mu);
            if (b && !l.infer_saved) {
              // The pack hook stops: what the last step's end made where saved storages are made
              // (a loader's next batch) would have been saved by this step. It is, by inference.
              for (auto& kv : l.live_entries) {
                Entry* e = kv.second;
                if (e->category == OTHER && e->step >= l.step - 1 && e->birth_name != nullptr && e->birth_out >= 0 &&
                    l.saved_births.count(SiteKey{e->birth_op, e->birth_name, e->nbytes, e->birth_out})) {
                  l.recategorise_locked(e, ACTIVATIONS, 0);
                }
              }
            }
            l.infer_saved = b;
          },
          "the pack hook is off: storages born where saved ones were on sampled steps are activations")
      .def_property("sample_sites",
          [](Ledger& l) { return l.sample_sites; },
          [](Ledger& l, bool b) { l.sample_sites = b; },
          "look up every large storage's line (else reuse the one of the same op in an earlier step)")
      .def_property("site_min_bytes",
          [](Ledger& l) { return l.site_min_bytes; },
          [](Ledger& l, int64_t n) { l.site_min_bytes = n; })
      .def_property("peak_watch_share",
          [](Ledger& l) { return l.peak_watch_share; },
          [](Ledger& l, double x) { std::lock_guard<SpinLock> g(l.mu); l.peak_watch_share = x; })
      .def_property("peak_watch_at",
          [](Ledger& l) { return l.peak_watch_at; },
          [](Ledger& l, int64_t n) { std::lock_guard<SpinLock> g(l.mu); l.peak_watch_at = n; })
      .def("set_scaling", [](Ledger& l, int64_t batch, const std::vector<int64_t>& numels,
                              const std::vector<std::vector<int64_t>>& sorted_shapes) {
        std::lock_guard<SpinLock> g(l.mu);
        l.batch = batch;
        l.fixed_numels = std::unordered_set<int64_t>(numels.begin(), numels.end());
        l.fixed_shapes = std::set<std::vector<int64_t>>(sorted_shapes.begin(), sorted_shapes.end());
      }, "the batch size and the parameters' sizes (numels, sorted shapes) that batch scaling checks")
      .def("pack", &pack, "the saved-tensor pack hook: count, categorise, charge to the modules running")
      .def("enter_module", [](Ledger& l, int64_t key, int32_t name) {
        std::lock_guard<SpinLock> g(l.mu);
        l.modules.emplace_back(key, name);
        l.module = name;
      }, "a module starts (its key, its name's index): new storages are charged to it")
      .def("leave_module", [](Ledger& l) {
        std::lock_guard<SpinLock> g(l.mu);
        if (!l.modules.empty()) l.modules.pop_back();
        l.module = l.modules.empty() ? 0 : l.modules.back().second;
      })
      .def("clear_modules", [](Ledger& l) {
        std::lock_guard<SpinLock> g(l.mu);
        l.modules.clear();
        l.module = 0;
      })
      .def("saved_bytes_of", [](Ledger& l, int64_t key) -> int64_t {
        std::lock_guard<SpinLock> g(l.mu);
        auto it = l.saved_bytes.find(key);
        return it == l.saved_bytes.end() ? 0 : it->second;
      }, "bytes saved for backward this step while module `key` ran")
      .def("take_saved_bytes", [](Ledger& l) {
        std::lock_guard<SpinLock> g(l.mu);
        std::unordered_map<int64_t, int64_t> out;
        out.swap(l.saved_bytes);
        l.saved_seen.clear();
        return out;
      }, "this step's saved bytes per module key; the count restarts")
      .def("touch_all", [](const std::shared_ptr<Ledger>& ledger, const std::vector<std::optional<at::Tensor>>& ts,
                            int category, int64_t step) {
        // touch(t, category, step, category) for each tensor; (index, key, bytes, flags) of those made now.
        std::vector<std::tuple<int64_t, intptr_t, int64_t, int>> made_now;
        for (size_t i = 0; i < ts.size(); ++i) {
          if (!ts[i].has_value()) continue;
          c10::StorageImpl* s = storage_of(*ts[i]);
          if (s == nullptr) continue;
          bool made = false, new_high = false;
          Entry* e = find_or_add(ledger.get(), s, *ts[i], category, step, &made, &new_high);
          std::lock_guard<SpinLock> g(ledger->mu);
          ledger->recategorise_locked(e, category, 0);
          if (made) made_now.emplace_back(static_cast<int64_t>(i), e->key, e->nbytes, e->marked ? NEW : NEW | FOREIGN);
        }
        return made_now;
      }, py::arg("tensors"), py::arg("category"), py::arg("step"))
      .def("touch", &touch, py::arg("tensor"), py::arg("category"), py::arg("step"), py::arg("to") = -1,
           py::arg("only_from_mask") = 0)
      .def("set_site", [](Ledger& l, intptr_t key, int32_t site) {
        std::lock_guard<SpinLock> g(l.mu);
        auto it = l.live_entries.find(key);
        if (it != l.live_entries.end()) it->second->site = site;
      })
      .def("release", [](Ledger& l, intptr_t key) {
        // A storage not marked has died (Python's weak reference): count it.
        Entry* e = nullptr;
        {
          std::lock_guard<SpinLock> g(l.mu);
          auto it = l.live_entries.find(key);
          if (it == l.live_entries.end() || it->second->marked) return;
          e = it->second;
          l.remove_locked(e);
        }
        delete e;
      })
      .def("seq_of", [](Ledger& l, intptr_t key) -> int64_t {
        std::lock_guard<SpinLock> g(l.mu);
        auto it = l.live_entries.find(key);
        return it == l.live_entries.end() ? -1 : it->second->seq;
      }, "the order of birth of the live storage `key`, -1 if none")
      .def("entry", [](Ledger& l, intptr_t key) -> py::object {
        std::vector<View> found;
        {
          std::lock_guard<SpinLock> g(l.mu);
          auto it = l.live_entries.find(key);
          if (it != l.live_entries.end()) found.emplace_back(it->second);
        }
        if (found.empty()) return py::none();
        return as_tuple(found[0]);
      }, "the live entry `key`: (key, nbytes, category, step, seq, site, module, scaled, shape, dtype), or None")
      .def("entries", [](Ledger& l) {
        std::vector<View> views;
        {
          std::lock_guard<SpinLock> g(l.mu);
          views.reserve(l.live_entries.size());
          for (auto& kv : l.live_entries) views.emplace_back(kv.second);
        }
        std::sort(views.begin(), views.end(), [](const View& a, const View& b) { return a.seq < b.seq; });
        py::list out;
        for (const View& v : views) out.append(as_tuple(v));
        return out;
      }, "every live entry, oldest first")
      .def("begin_step", [](Ledger& l, int64_t step, int64_t min_old_bytes) {
        std::lock_guard<SpinLock> g(l.mu);
        l.step = step;
        l.op_index = 0;
        l.step_peak = l.live;
        l.local_peaks.clear();
        l.rising = false;
        l.old_bytes = 0;
        l.peak_watch_at = 0;
        for (auto& kv : l.live_entries) {
          Entry* e = kv.second;
          e->old = e->category >= ACTIVATIONS && e->nbytes >= min_old_bytes;
          e->linger = false;
          if (e->old) l.old_bytes += e->nbytes;
        }
        l.linger_at.clear();
      }, "a step boundary: the step's peak restarts; transient storages alive now become old")
      .def("old_entries", [](Ledger& l, int64_t min_bytes) {
        std::lock_guard<SpinLock> g(l.mu);
        std::vector<std::array<int64_t, 4>> out;
        for (auto& kv : l.live_entries) {
          const Entry* e = kv.second;
          if (e->old && e->nbytes >= min_bytes) out.push_back({e->key, e->nbytes, e->step, e->seq});
        }
        return out;
      }, "(key, nbytes, step, seq) of old transient storages of at least min_bytes")
      .def("set_linger", [](Ledger& l, const std::vector<intptr_t>& keys) {
        std::lock_guard<SpinLock> g(l.mu);
        for (auto& kv : l.linger_at) {
          auto it = l.live_entries.find(kv.first);
          if (it != l.live_entries.end()) it->second->linger = false;
        }
        l.linger_at.clear();
        for (intptr_t k : keys) {
          auto it = l.live_entries.find(k);
          if (it != l.live_entries.end()) it->second->linger = true;
          l.linger_at[k] = -1;
        }
      }, "the lingering candidates whose death to note")
      .def("linger_index", [](Ledger& l, intptr_t key) -> int64_t {
        std::lock_guard<SpinLock> g(l.mu);
        auto it = l.linger_at.find(key);
        return it == l.linger_at.end() ? -1 : it->second;
      }, "the length of local_peaks when candidate `key` died; -1 alive or not a candidate")
      .def("mark_first_batch", [](Ledger& l, const std::unordered_set<intptr_t>& inputs) {
        // The first model call's batch: pre-loop storages that scale with it (its inputs, when known).
        std::lock_guard<SpinLock> g(l.mu);
        for (auto& kv : l.live_entries) {
          Entry* e = kv.second;
          if (!e->scaled && e->category >= ACTIVATIONS && e->step == PRE_LOOP && !e->shape.empty()
              && e->shape[0] == l.batch && l.scales(e->shape) && (inputs.empty() || inputs.count(e->key))) {
            e->scaled = true;
            l.scaled_live += e->nbytes;
          }
        }
      });
  m.def("install", &install, py::arg("ledger"), py::arg("site"), py::arg("foreign"), py::arg("peak"),
        "count this thread's ops into ledger; site() -> int, foreign(storage, key), peak(live)");
  m.def("uninstall", &uninstall);
  m.def("error_count", []() { return errors.load(); });
}
