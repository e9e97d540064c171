"""What a byte of live tensor storage is for, and the one table of codes both trackers use.

The C++ ledger (``memprof/collect/ophook/categories.h``) is generated from :data:`CODES` by
:func:`cpp_header`; a test fails when the two disagree.
"""

from __future__ import annotations

import enum


class Category(str, enum.Enum):
    """What a byte of live tensor storage is for."""

    PARAMETERS = "parameters"
    GRADIENTS = "gradients"
    OPTIMIZER_STATE = "optimizer_state"
    ACTIVATIONS = "activations"
    OTHER = "other"

    @property
    def code(self) -> int:
        return CODES[self]

    @property
    def persistent(self) -> bool:
        """Kept across iterations by design (the model and its training state), not transient."""
        return CODES[self] < TRANSIENT_FROM


CATEGORIES: tuple[Category, ...] = tuple(Category)
# The code of each category in the trackers' ledgers: the index in CATEGORIES. Codes from
# ACTIVATIONS on are transient memory, the part a lingering storage or an iteration's peak is made of.
CODES: dict[Category, int] = {c: i for i, c in enumerate(CATEGORIES)}
PARAMETERS, GRADIENTS, OPTIMIZER_STATE, ACTIVATIONS, OTHER = (CODES[c] for c in CATEGORIES)
PERSISTENT: tuple[int, ...] = (PARAMETERS, GRADIENTS, OPTIMIZER_STATE)
TRANSIENT_FROM = ACTIVATIONS  # codes from this one on are transient (a step's activations and the rest)
PRE_LOOP = -1  # the step index of storages created before the first iteration


def cpp_header() -> str:
    """The C++ header with the same codes, as ``categories.h`` holds it."""
    lines = [
        "// Generated from memprof/model/categories.py by cpp_header(): edit that file, not this one.",
        "// tests/model/test_categories.py checks that the two agree.",
        "#pragma once",
        "#include <cstdint>",
        "",
        "namespace memprof {",
        f"constexpr int NUM_CATEGORIES = {len(CATEGORIES)};",
    ]
    lines += [f"constexpr int {c.name} = {CODES[c]};  // {c.value}" for c in CATEGORIES]
    lines += [
        f"constexpr int TRANSIENT_FROM = {TRANSIENT_FROM};  // categories from this one on are transient",
        f"constexpr int64_t PRE_LOOP = {PRE_LOOP};  // the step of storages made before the first iteration",
        "}  // namespace memprof",
        "",
    ]
    return "\n".join(lines)
