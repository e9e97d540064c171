// memprof's op hook: the C++ half of the detailed mode's storage tracker.
//
// A thread-local RecordFunction callback sees every op's outputs, as a Python TorchDispatchMode
// would, for about a tenth of its cost: it looks each output's storage up in a set of storages
// already reported and calls Python (StorageTracker.seen) only for a storage it has not reported.
// The set holds weak references: a storage that dies leaves it without a word from Python. Views,
// in-place ops and ops on known storages therefore never leave C++.
//
// It reports what a dispatch mode sees, no more: the outputs of ops the caller (or a composite
// op's decomposition) called, not the scratch tensors a kernel makes for itself inside an op.
// An op without a CompositeImplicitAutograd kernel is opaque: ops called inside it are hidden.
//
// Built on first use by memprof.collect.ophook with torch.utils.cpp_extension.
#include <torch/extension.h>
#include <ATen/record_function.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/Storage.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdint>
#include <iterator>
#include <functional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

// Guards `known`: autograd's device threads run ops too (they inherit the thread-local callback).
// A spin lock: it is held for one hash lookup, almost never contended, and taken per output.
std::atomic_flag lock_flag = ATOMIC_FLAG_INIT;
struct Guard {
  Guard() { while (lock_flag.test_and_set(std::memory_order_acquire)) {} }
  ~Guard() { lock_flag.clear(std::memory_order_release); }
};

// The storages already reported. A weak reference keeps a dead storage's address from being
// reused while its entry is here, so an entry found is the same storage, alive; entries of dead
// storages are swept out when the table has doubled since the last sweep (no call from Python
// at each death).
std::unordered_map<const c10::StorageImpl*, c10::weak_intrusive_ptr<c10::StorageImpl>> known;
size_t sweep_at = 1024;

PyObject* seen_cb = nullptr;  // owned; called with the GIL
at::CallbackHandle handle = 0;
std::atomic<int64_t> errors{0};

struct PairHash {
  size_t operator()(const std::pair<const char*, const char*>& p) const {
    return std::hash<const void*>()(p.first) ^ (std::hash<const void*>()(p.second) << 1);
  }
};

// What each thread keeps, in one thread-local (one TLS lookup per callback).
struct ThreadState {
  bool busy = false;  // ops run by the Python callback itself are not reported
  // Whether each op being run is opaque, and how many opaque ops enclose this point.
  std::vector<char> opaque_stack;
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

void sweep_locked() {
  for (auto it = known.begin(); it != known.end();) {
    it = it->second.expired() ? known.erase(it) : std::next(it);
  }
  sweep_at = std::max<size_t>(1024, 2 * known.size());
}

void remember_locked(const c10::Storage& st) {
  c10::StorageImpl* s = st.unsafeGetStorageImpl();
  known.emplace(s, c10::weak_intrusive_ptr<c10::StorageImpl>(st.getWeakStorageImpl()));
  if (known.size() >= sweep_at) sweep_locked();
}

// An exception from the Python side can't go through the op (its end runs in a destructor). A
// signal handler's (Ctrl+C's KeyboardInterrupt, memprof's SIGTERM unwinding) must not be lost: the
// signal is raised again, and Python acts on it at its next chance, in the user's code. Anything
// else is counted (error_count) and dropped.
void redeliver_or_count() {
  if (PyErr_Occurred() == nullptr) {  // a C++ error on the way (the tensor's sizes)
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

void report(ThreadState& ts, const at::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return;
  const c10::Storage& storage = t.storage();
  const c10::StorageImpl* s = storage.unsafeGetStorageImpl();
  if (s->nbytes() == 0 || s->device_type() == c10::DeviceType::Meta) return;
  {
    Guard g;
    if (known.count(s)) return;
  }
  bool keep = false;
  {
    pybind11::gil_scoped_acquire gil;
    if (seen_cb == nullptr) return;
    ts.busy = true;
    // seen(storage, nbytes, shape, dtype): no Python tensor is made (most outputs of backward have none)
    PyObject* args[4] = {nullptr, nullptr, nullptr, nullptr};
    PyObject* r = nullptr;
    try {
      args[0] = THPStorage_Wrap(storage);
      args[1] = PyLong_FromLongLong(static_cast<long long>(s->nbytes()));
      const auto sizes = t.sizes();
      args[2] = PyTuple_New(static_cast<Py_ssize_t>(sizes.size()));
      for (size_t i = 0; args[2] != nullptr && i < sizes.size(); ++i) {
        PyTuple_SET_ITEM(args[2], static_cast<Py_ssize_t>(i), PyLong_FromLongLong(sizes[i]));
      }
      args[3] = reinterpret_cast<PyObject*>(torch::getTHPDtype(t.scalar_type()));
      Py_XINCREF(args[3]);
      if (args[0] && args[1] && args[2] && args[3]) r = PyObject_Vectorcall(seen_cb, args, 4, nullptr);
    } catch (const std::exception&) {
      r = nullptr;  // sizes of an exotic tensor: not counted, and said (error_count)
    }
    for (PyObject* a : args) Py_XDECREF(a);
    ts.busy = false;
    if (r != nullptr) {
      keep = (r == Py_True);
      Py_DECREF(r);
    } else {
      redeliver_or_count();
    }
  }
  if (keep) {
    Guard g;
    remember_locked(storage);
  }
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  ThreadState& ts = tls;
  const bool opaque = is_opaque(ts, fn);
  ts.opaque_stack.push_back(opaque);
  if (opaque) ++ts.opaque_depth;
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  ThreadState& ts = tls;
  if (!ts.opaque_stack.empty()) {
    if (ts.opaque_stack.back()) --ts.opaque_depth;
    ts.opaque_stack.pop_back();
  }
  if (ts.busy || ts.opaque_depth > 0) return;
  for (const c10::IValue& v : fn.outputs()) {
    if (v.isTensor()) {
      report(ts, v.toTensor());
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) report(ts, t);
    } else if (v.isList()) {
      for (const c10::IValue& e : v.toListRef()) {
        if (e.isTensor()) report(ts, e.toTensor());
      }
    }
  }
}

// Start reporting the ops of this thread (and of autograd's threads working for it) to `seen`.
void install(pybind11::object seen) {
  if (handle != 0) at::removeCallback(handle);
  {
    Guard g;
    known.clear();  // a new owner may not know what the last one was told
    sweep_at = 1024;
  }
  Py_XDECREF(seen_cb);
  seen_cb = seen.release().ptr();
  handle = at::addThreadLocalCallback(
      at::RecordFunctionCallback(on_start, on_end).needsOutputs(true).scopes({at::RecordScope::FUNCTION}));
}

void uninstall() {
  if (handle != 0) at::removeCallback(handle);
  handle = 0;
}

// A storage the tracker counted by itself (a tensor autograd saves before the op that made it
// ends, a census): not to be reported again.
void remember(pybind11::handle storage) {
  if (!THPStorage_Check(storage.ptr())) return;
  const c10::Storage& st = THPStorage_Unpack(storage.ptr());
  Guard g;
  remember_locked(st);
}

int64_t error_count() { return errors.load(); }

// Storages reported and still alive.
int64_t known_count() {
  Guard g;
  sweep_locked();
  return static_cast<int64_t>(known.size());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("install", &install, "report new output storages of this thread's ops to seen(storage, nbytes, shape, dtype) -> bool");
  m.def("uninstall", &uninstall);
  m.def("remember", &remember, "count this storage (a Python storage object) as reported");
  m.def("error_count", &error_count);
  m.def("known_count", &known_count);
}
