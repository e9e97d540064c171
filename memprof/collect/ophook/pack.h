// The saved-tensor pack hook (pack.cpp); the rest of what autograd saves is the ledger's (ledger.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "ledger.h"

namespace memprof {

// Autograd saves `t` for backward. Its storage is an activation (if not already categorised),
// counted now if new (autograd saves an op's output before the op ends, when the callback sees
// it), and charged to each module running, once per step. Returns what autograd keeps: `t`
// detached (itself, it would hold its own graph node in a reference cycle).
at::Tensor pack(const std::shared_ptr<Ledger>& ledger, const at::Tensor& t);

}  // namespace memprof
