// The ledger's calls from Python that take tensors or give back Python objects (pycalls.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <tuple>
#include <vector>

#include "ledger.h"

namespace memprof {

// Count a tensor's storage if new (created with `category`, at `step`), then, if `to` >= 0, move
// it to category `to` (only from the categories in `only_from_mask`, 0: from any).
// Returns (key, bytes, flags): flags NEW and FOREIGN (ledger.h). (0, 0, 0): no storage to count.
pybind11::tuple touch(const std::shared_ptr<Ledger>& ledger, const at::Tensor& t, int category, int64_t step,
                      int to, int only_from_mask);

// touch(t, category, step, category) for each tensor (None: skipped); (index, key, bytes, flags)
// of those made now.
std::vector<std::tuple<int64_t, intptr_t, int64_t, int>> touch_all(
    const std::shared_ptr<Ledger>& ledger, const std::vector<std::optional<at::Tensor>>& tensors, int category,
    int64_t step);

// The live entry `key`: (key, nbytes, category, step, seq, site, module, scaled, shape, dtype), or None.
pybind11::object entry(Ledger& ledger, intptr_t key);

// Every live entry, oldest first, as entry() gives it.
pybind11::list entries(Ledger& ledger);

}  // namespace memprof
