// Generated from memprof/model/categories.py by cpp_header(): edit that file, not this one.
// tests/model/test_categories.py checks that the two agree.
#pragma once
#include <cstdint>

namespace memprof {
constexpr int NUM_CATEGORIES = 5;
constexpr int PARAMETERS = 0;  // parameters
constexpr int GRADIENTS = 1;  // gradients
constexpr int OPTIMIZER_STATE = 2;  // optimizer_state
constexpr int ACTIVATIONS = 3;  // activations
constexpr int OTHER = 4;  // other
constexpr int TRANSIENT_FROM = 3;  // categories from this one on are transient
constexpr int64_t PRE_LOOP = -1;  // the step of storages made before the first iteration
}  // namespace memprof
