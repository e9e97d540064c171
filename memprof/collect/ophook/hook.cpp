// The RecordFunction callback and its calls into Python (hook.h).
//
// It reports what a dispatch mode sees, no more: the outputs of ops the caller (or a composite
// op's decomposition) called, not the scratch tensors a kernel makes for itself inside an op.
// An op without a CompositeImplicitAutograd kernel is opaque: ops called inside it are hidden.

// RecordFunction as libtorch (built with NDEBUG) has it: without its debug-only member and check,
// which would fail at every read of an op's inputs in a start callback of an extension built
// without NDEBUG (the flag is on for this header only).
#ifndef NDEBUG
#define NDEBUG
#include <ATen/record_function.h>
#undef NDEBUG
#else
#include <ATen/record_function.h>
#endif

#include "hook.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/Storage.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <pthread.h>

#include "marks.h"

namespace memprof {

namespace py = pybind11;

namespace {

// What the callback and Python share: the active ledger and its Python callbacks (set by install).
std::shared_ptr<Ledger> active;  // owned here while installed; the callback reads active_raw
std::atomic<Ledger*> active_raw{nullptr};
PyObject* site_cb = nullptr;     // () -> int: the user's line, as an index (-1: none)
PyObject* foreign_cb = nullptr;  // (storage, key) -> None: watch this storage's death
PyObject* peak_cb = nullptr;     // (live) -> None: a new high of the step past the watch's mark
at::CallbackHandle handle = 0;
bool handle_reads_inputs = false;
std::atomic<int64_t> errors{0};
thread_local ThreadState tls;

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

// Output `out` of op `op`, which just ended.
void see(ThreadState& ts, Ledger* ledger, const at::Tensor& t, const char* op, int32_t out, bool derived) {
  if (!t.defined() || !t.has_storage()) return;
  const c10::Storage& storage = t.storage();
  c10::StorageImpl* s = storage.unsafeGetStorageImpl();
  if (s->nbytes() == 0 || s->device_type() == c10::DeviceType::Meta) return;
  // The common case, a view or an in-place op: a storage this ledger marked, found by its deleter.
  Entry* e = marked_entry(s);
  if (e != nullptr && e->ledger.get() == ledger && e->key == reinterpret_cast<intptr_t>(s)) {
    if (e->birth_out < 0 && e->birth_op == ledger->op_index && e->birth_name == op) {
      std::lock_guard<SpinLock> g(ledger->mu);
      ledger->note_output_locked(e, op, out);
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
  if (made) {
    if (ledger->infer_saved) {
      derived = ledger->born_derived(e);  // no inputs read: where it was born says
    } else if (derived) {
      std::lock_guard<SpinLock> g(ledger->mu);
      ledger->note_derived_locked(e);
    }
    ledger->taint(e, derived);
    python_parts(ts, ledger, e, storage, new_high, op, out);
  }
}

// Whether the op starting reads a storage of `ledger` that scales with the batch.
bool reads_scaled(Ledger* ledger, const at::RecordFunction& fn) {
  for (const c10::IValue& v : fn.inputs()) {
    if (v.isTensor()) {
      if (ledger->input_scales(storage_of(v.toTensor()))) return true;
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) {
        if (ledger->input_scales(storage_of(t))) return true;
      }
    } else if (v.isList()) {
      for (const c10::IValue& e : v.toListRef()) {
        if (e.isTensor() && ledger->input_scales(storage_of(e.toTensor()))) return true;
      }
    }
  }
  return false;
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  ThreadState& ts = tls;
  const bool opaque = is_opaque(ts, fn);
  bool derived = false;
  if (!ts.busy && ts.opaque_depth == 0) {  // its outputs will be seen: does it read the batch?
    Ledger* ledger = active_raw.load(std::memory_order_acquire);
    if (ledger != nullptr && ledger->batch > 0 && !ledger->infer_saved) {
      try {
        derived = reads_scaled(ledger, fn);
      } catch (const std::exception&) {
        ++errors;
      }
    }
  }
  ts.opaque_stack.push_back(opaque);
  ts.op_stack.push_back(fn.name());
  ts.derived_stack.push_back(derived);
  if (opaque) ++ts.opaque_depth;
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  ThreadState& ts = tls;
  bool derived = false;
  if (!ts.opaque_stack.empty()) {
    if (ts.opaque_stack.back()) --ts.opaque_depth;
    ts.opaque_stack.pop_back();
    ts.op_stack.pop_back();
    derived = ts.derived_stack.back();
    ts.derived_stack.pop_back();
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
      see(ts, ledger, v.toTensor(), op, out++, derived);
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) see(ts, ledger, t, op, out++, derived);
    } else if (v.isList()) {
      for (const c10::IValue& e : v.toListRef()) {
        if (e.isTensor()) see(ts, ledger, e.toTensor(), op, out++, derived);
      }
    }
  }
}

// The callback, reading each op's inputs (for batch scaling's taint) only where asked: on sampled
// steps. Between them the ledger infers it from where storages are born (Ledger::born_derived).
void add_callback(bool read_inputs) {
  handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).needsInputs(read_inputs).needsOutputs(true).scopes(
          {at::RecordScope::FUNCTION}));
  handle_reads_inputs = read_inputs;
}

void set_callback(PyObject** slot, const py::object& fn) {
  PyObject* old = *slot;
  *slot = fn.is_none() ? nullptr : fn.inc_ref().ptr();
  Py_XDECREF(old);
}

// A forked child (a DataLoader worker) has one thread: the active ledger's lock, held by another
// thread at the fork, would never be released there (marks.cpp does the same for its own lock).
void unlock_active_in_child() {
  if (Ledger* l = active_raw.load()) l->mu.unlock();
}

}  // namespace

ThreadState& this_thread() { return tls; }

Ledger* active_ledger() { return active_raw.load(std::memory_order_acquire); }

void count_error() { ++errors; }

int64_t error_count() { return errors.load(); }

void python_parts(ThreadState& ts, Ledger* ledger, Entry* e, const c10::Storage& storage, bool watch_new_high,
                  const char* op, int32_t out) {
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

void install(const std::shared_ptr<Ledger>& ledger, py::object site, py::object foreign, py::object peak) {
  static std::once_flag fork_handler;
  std::call_once(fork_handler, [] { pthread_atfork(nullptr, nullptr, &unlock_active_in_child); });
  prepare_marks();
  if (handle != 0) at::removeCallback(handle);
  active = ledger;
  active_raw.store(ledger.get(), std::memory_order_release);
  set_callback(&site_cb, site);
  set_callback(&foreign_cb, foreign);
  set_callback(&peak_cb, peak);
  add_callback(!ledger->infer_saved);
}

void set_infer_saved(Ledger& ledger, bool on) {
  ledger.set_infer_saved(on);
  if (handle != 0 && &ledger == active_raw.load() && handle_reads_inputs == on) {
    at::removeCallback(handle);
    add_callback(!on);
  }
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

}  // namespace memprof
