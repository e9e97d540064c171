// The ledger's calls from Python that take tensors or give back Python objects (pycalls.h).
#include "pycalls.h"

#include <torch/csrc/DynamicTypes.h>

#include "marks.h"

namespace memprof {

namespace py = pybind11;

namespace {

// (key, nbytes, category, step, seq, site, module, scaled, shape, dtype)
py::tuple as_tuple(const View& v) {
  py::tuple shape(v.shape.size());
  for (size_t i = 0; i < v.shape.size(); ++i) shape[i] = py::int_(v.shape[i]);
  PyObject* dtype = reinterpret_cast<PyObject*>(torch::getTHPDtype(v.dtype));
  return py::make_tuple(v.key, v.nbytes, v.category, v.step, v.seq, v.site, v.module, v.scaled, shape,
                        py::reinterpret_borrow<py::object>(dtype));
}

}  // namespace

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

std::vector<std::tuple<int64_t, intptr_t, int64_t, int>> touch_all(
    const std::shared_ptr<Ledger>& ledger, const std::vector<std::optional<at::Tensor>>& tensors, int category,
    int64_t step) {
  std::vector<std::tuple<int64_t, intptr_t, int64_t, int>> made_now;
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].has_value()) continue;
    c10::StorageImpl* s = storage_of(*tensors[i]);
    if (s == nullptr) continue;
    bool made = false, new_high = false;
    Entry* e = find_or_add(ledger.get(), s, *tensors[i], category, step, &made, &new_high);
    std::lock_guard<SpinLock> g(ledger->mu);
    ledger->recategorise_locked(e, category, 0);
    if (made) made_now.emplace_back(static_cast<int64_t>(i), e->key, e->nbytes, e->marked ? NEW : NEW | FOREIGN);
  }
  return made_now;
}

py::object entry(Ledger& ledger, intptr_t key) {
  const std::optional<View> found = ledger.view(key);
  if (!found) return py::none();
  return as_tuple(*found);
}

py::list entries(Ledger& ledger) {
  py::list out;
  for (const View& v : ledger.views()) out.append(as_tuple(v));
  return out;
}

}  // namespace memprof
