// memprof's op hook: the C++ half of the detailed mode's storage tracker.
//
// A thread-local RecordFunction callback sees every op's outputs, as a Python TorchDispatchMode
// would, for about a tenth of its cost: it looks each output's storage up in a set of storages
// already reported and calls Python (StorageTracker.seen) only for a storage it has not reported.
// Python removes a storage from the set (forget) when the storage dies. Views, in-place ops and
// ops on known storages therefore never leave C++.
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

#include <csignal>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

std::mutex mu;  // autograd's device threads run ops too (they inherit the thread-local callback)
std::unordered_set<const c10::StorageImpl*> known;
PyObject* seen_cb = nullptr;  // owned; called with the GIL
at::CallbackHandle handle = 0;
thread_local bool busy = false;  // ops run by the Python callback itself are not reported
int64_t errors = 0;

// Per thread: whether each op being run is opaque, and how many opaque ops enclose this point.
thread_local std::vector<char> opaque_stack;
thread_local int opaque_depth = 0;

struct PairHash {
  size_t operator()(const std::pair<const char*, const char*>& p) const {
    return std::hash<const void*>()(p.first) ^ (std::hash<const void*>()(p.second) << 1);
  }
};
// Keyed by the operator's name and overload strings, which live as long as the operator.
thread_local std::unordered_map<std::pair<const char*, const char*>, bool, PairHash> opaque_cache;

bool is_opaque(const at::RecordFunction& fn) {
  auto key = std::make_pair(fn.name(), fn.overload_name());
  auto it = opaque_cache.find(key);
  if (it != opaque_cache.end()) return it->second;
  bool opaque = false;
  if (auto name = fn.operator_name()) {
    auto op = c10::Dispatcher::singleton().findOp(*name);
    opaque = op.has_value() && !op->hasKernelForDispatchKey(c10::DispatchKey::CompositeImplicitAutograd);
  }
  opaque_cache.emplace(key, opaque);
  return opaque;
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

void report(const at::Tensor& t) {
  if (!t.defined() || !t.has_storage()) return;
  const c10::StorageImpl* s = t.storage().unsafeGetStorageImpl();
  if (s->nbytes() == 0 || s->device_type() == c10::DeviceType::Meta) return;
  {
    std::lock_guard<std::mutex> g(mu);
    if (known.count(s)) return;
  }
  bool keep = false;
  {
    pybind11::gil_scoped_acquire gil;
    if (seen_cb == nullptr) return;
    busy = true;
    // seen(storage, nbytes, shape, dtype): no Python tensor is made (most outputs of backward have none)
    PyObject* args[4] = {nullptr, nullptr, nullptr, nullptr};
    PyObject* r = nullptr;
    try {
      args[0] = THPStorage_Wrap(t.storage());
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
    busy = false;
    if (r != nullptr) {
      keep = (r == Py_True);
      Py_DECREF(r);
    } else {
      redeliver_or_count();
    }
  }
  if (keep) {
    std::lock_guard<std::mutex> g(mu);
    known.insert(s);
  }
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
  if (busy || opaque_depth > 0) return;
  for (const c10::IValue& v : fn.outputs()) {
    if (v.isTensor()) {
      report(v.toTensor());
    } else if (v.isTensorList()) {
      for (const at::Tensor& t : v.toTensorVector()) report(t);
    } else if (v.isList()) {
      for (const c10::IValue& e : v.toListRef()) {
        if (e.isTensor()) report(e.toTensor());
      }
    }
  }
}

// Start reporting the ops of this thread (and of autograd's threads working for it) to `seen`.
void install(pybind11::object seen) {
  if (handle != 0) at::removeCallback(handle);
  {
    std::lock_guard<std::mutex> g(mu);
    known.clear();  // a new owner may not know what the last one was told
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

// The storage at `cdata` (a storage's ``_cdata``) died: a new one at its address is news.
void forget(std::uintptr_t cdata) {
  std::lock_guard<std::mutex> g(mu);
  known.erase(reinterpret_cast<const c10::StorageImpl*>(cdata));
}

int64_t error_count() { return errors; }

int64_t known_count() {
  std::lock_guard<std::mutex> g(mu);
  return static_cast<int64_t>(known.size());
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("install", &install, "report new output storages of this thread's ops to seen(storage, nbytes, shape, dtype) -> bool");
  m.def("uninstall", &uninstall);
  m.def("forget", &forget);
  m.def("error_count", &error_count);
  m.def("known_count", &known_count);
}
