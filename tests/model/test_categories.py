"""The one table of category codes: the C++ ledger's header is generated from it, and the trackers
read their codes from it rather than copying them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import torch

from memprof.collect.storage import StorageTracker
from memprof.model.categories import CATEGORIES, CODES, PERSISTENT, Category, cpp_header

COLLECT = Path(__file__).resolve().parents[2] / "memprof" / "collect"
HEADER = COLLECT / "ophook" / "categories.h"


def test_the_committed_cpp_header_is_the_generated_one() -> None:
    assert HEADER.read_text() == cpp_header(), (
        "memprof/collect/ophook/categories.h is stale: regenerate it with "
        "python -c 'from memprof.model.categories import cpp_header; print(cpp_header(), end=\"\")' > " + str(HEADER)
    )


def test_no_tracker_source_defines_the_codes_itself() -> None:
    names = {c.name for c in CATEGORIES} | {"PERSISTENT", "PRE_LOOP", "TRANSIENT_FROM", "NUM_CATEGORIES"}
    for path in sorted(COLLECT.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AnnAssign) else []
            for t in targets:
                for n in ast.walk(t):
                    assert not (isinstance(n, ast.Name) and n.id in names), f"{path.name} defines {n.id}"
    defines = re.compile(r"constexpr\s+\w+\s+(" + "|".join(sorted(names)) + r")\b")
    for path in sorted((COLLECT / "ophook").glob("*")):
        if path != HEADER:
            assert not defines.search(path.read_text()), f"{path.name} defines a category code"


def test_the_python_tracker_counts_each_category_under_its_code() -> None:
    tr = StorageTracker()
    assert len(tr.cat) == len(tr.peak_cat) == len(CATEGORIES)
    kept = []
    for c in CATEGORIES:
        t = torch.ones(c.code + 1)
        tr.set_category(t, c.code)
        kept.append(t)
        assert tr.cat[CODES[c]] == t.untyped_storage().nbytes()
    assert [c for c in CATEGORIES if c.persistent] == [CATEGORIES[i] for i in PERSISTENT]
    assert Category.ACTIVATIONS.code not in PERSISTENT and Category.OTHER.code not in PERSISTENT
