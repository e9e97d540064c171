"""Find, build and load memprof's C++ op hook (the sources in ``ophook/``), the native tracker's ledger.

The detailed mode must see every storage an op creates. A Python ``TorchDispatchMode`` costs a
C++-to-Python round trip per op (3-4 µs: more than a small op itself); the op hook is a
thread-local ``RecordFunction`` callback in C++ that keeps the storage ledger itself
(:class:`memprof.collect.native.NativeTracker`), so no Python runs per op nor per storage.

It is compiled once per torch and Python version with ``torch.utils.cpp_extension`` (a C++
compiler and ninja are needed: about half a minute) into ``$MEMPROF_CACHE_DIR`` (default
``$XDG_CACHE_HOME/memprof`` or ``~/.cache/memprof``). ``memprof run --detail full`` builds it when
missing; every session uses it once built. ``MEMPROF_OPHOOK=0`` turns it off,
``MEMPROF_OPHOOK=build`` builds it whenever it is missing.

Known limitations:
- Without a compiler the session uses the Python tracker, a dispatch mode: the same figures, slower.
- ``--memory-limit`` on CPU raises its out-of-memory from inside the op: only the Python tracker
  can, so it is used then.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

NAME = "memprof_ophook"
SOURCE_DIR = Path(__file__).with_name("ophook")  # its .cpp files and the headers they include

_module: ModuleType | None = None
_failure: str | None = None  # why the last build failed: not tried again in this process


def mode() -> str:
    """``0`` (never), ``build`` (build whenever missing) or ``auto`` (use when built)."""
    value = os.environ.get("MEMPROF_OPHOOK", "auto").strip().lower()
    return value if value in ("0", "build") else "auto"


def cache_dir() -> Path:
    root = os.environ.get("MEMPROF_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "memprof"


def sources() -> list[Path]:
    """The files compiled, in a stable order (none where the package ships no sources)."""
    return sorted(SOURCE_DIR.glob("*.cpp"))


def _digest() -> str:
    """Of every source and header, names included: an edit to any of them builds afresh."""
    h = hashlib.sha256()
    for path in sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in (".cpp", ".h")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def build_dir() -> Path:
    """One folder per version of the sources, torch and Python: a change of any builds afresh."""
    import torch

    digest = _digest()
    tag = f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}-{digest}"
    return cache_dir() / "ophook" / tag.replace("+", "_")


def _library(folder: Path) -> Path | None:
    found = sorted(folder.glob(f"{NAME}*.so")) if folder.is_dir() else []
    return found[0] if found else None


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(build: bool = False, log: Callable[[str], None] | None = None) -> ModuleType | None:
    """The op hook, or None: turned off, not built (and ``build`` False), or the build failed
    (:func:`failure` says why). Never raises."""
    global _module, _failure
    wanted = mode()
    if wanted == "0" or not sources():
        return None
    if _module is not None:
        return _module
    try:
        folder = build_dir()
        lib = _library(folder)
        if lib is not None:
            _module = _import(lib)
            return _module
        if not (build or wanted == "build") or _failure is not None:
            return None
        if log is not None:
            log(f"memprof: building its C++ op hook once, into {folder} (about a minute)")
        folder.mkdir(parents=True, exist_ok=True)
        from torch.utils import cpp_extension

        _module = cpp_extension.load(NAME, sources=[str(p) for p in sources()], build_directory=str(folder),
                                     extra_cflags=["-O2"], verbose=False)
        return _module
    except Exception as e:  # no compiler, no headers, a read-only cache: the Python mode does the job
        _failure = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        return None


def failure() -> str | None:
    return _failure
