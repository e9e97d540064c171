"""The storage trackers' fixtures: the C++ op hook, and a tracker of each kind.

Building the hook takes about half a minute here: only tests marked ``slow`` build it (the hook's
own tests and the native tracker's variants). A fast test that asks for it uses it when already
built and skips otherwise: the fast tier never compiles. A build in the cache named by
``$MEMPROF_CACHE_DIR`` when the run began is reused; else the tests build into their own cache.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from memprof.collect import ophook

# The caller's cache, read before the autouse fixtures point memprof at the tests' own.
_CALLER_CACHE = os.environ.get("MEMPROF_CACHE_DIR")


@pytest.fixture(scope="session")
def hook_cache(cache_dir: Path) -> Path:
    """Where the op hook is built and found: the caller's cache if named, else the tests' own."""
    return Path(_CALLER_CACHE) if _CALLER_CACHE else cache_dir


def _has_compiler() -> bool:
    return shutil.which(os.environ.get("CXX", "c++")) is not None and shutil.which("ninja") is not None


@pytest.fixture
def hook(request: pytest.FixtureRequest, hook_cache: Path) -> ModuleType:
    """The op hook: built when missing for a slow test, else used only if built (skipped if not).
    The environment is put back at once: other tests keep the Python tracker (``_op_hook_off``)."""
    build = request.node.get_closest_marker("slow") is not None
    if build and not _has_compiler():
        pytest.skip("no C++ compiler or ninja: memprof runs its Python tracker instead")
    saved = {k: os.environ.get(k) for k in ("MEMPROF_CACHE_DIR", "MEMPROF_OPHOOK")}
    os.environ["MEMPROF_CACHE_DIR"] = str(hook_cache)
    os.environ["MEMPROF_OPHOOK"] = "auto"
    try:
        module = ophook.load(build=build)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if module is None and not build:
        pytest.skip("the C++ op hook is not built (the slow tier builds it: pytest -m slow)")
    assert module is not None, f"the op hook did not build: {ophook.failure()}"
    return module


@pytest.fixture(params=["python", pytest.param("native", marks=pytest.mark.slow)])
def make_tracker(request: pytest.FixtureRequest) -> Any:
    """Makes a tracker of each kind: Python's (a dispatch mode, the fast tier) and the op hook's
    C++ ledger (the slow tier, which builds the hook)."""
    from memprof.collect.native import NativeTracker
    from memprof.collect.storage import StorageTracker

    if request.param == "python":
        return StorageTracker
    module = request.getfixturevalue("hook")
    return lambda: NativeTracker(module)
