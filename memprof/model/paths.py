"""Which source files are the user's: the one rule every layer uses.

Never torch's, memprof's, the standard library's, an installed package's or a compiled source's.
Files of this machine are judged by where they really are; paths recorded elsewhere (a memory
snapshot from another machine) by the folder names they contain.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sysconfig


def _internal_dirs() -> tuple[str, ...]:
    dirs = {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}  # memprof itself
    paths = sysconfig.get_paths()
    dirs.update(paths[k] for k in ("stdlib", "purelib", "platlib") if k in paths)
    spec = importlib.util.find_spec("torch")  # found, not imported
    if spec is not None and spec.submodule_search_locations:
        dirs.update(spec.submodule_search_locations)
    return tuple(os.path.realpath(d) + os.sep for d in dirs)


_INTERNAL_DIRS = _internal_dirs()
_LIBRARY = re.compile(r"[\\/](site-packages|dist-packages)[\\/]|[\\/]lib[\\/]python\d+(\.\d+)?[\\/]")
_COMPILED = re.compile(r"\.(cpp|cc|cxx|c|h|hpp|cu|cuh|so)$")
# A package of these names, by its path: recorded on another machine (the path does not exist
# here), or a copy of the package beside the installed one (its folder has an __init__.py). A
# user's own folder that is merely called "memprof" is neither.
_PACKAGE_SEGMENT = re.compile(r"^(.*?[\\/](?:torch|memprof|_pytest|pluggy))[\\/]")
# Each filename judged so far: read inline where frames are walked at every step (a dict lookup
# there, not a call of is_user_file per frame).
judged: dict[str, bool] = {}
NOTEBOOK_CELL = "<ipython-input-"


def is_library_file(filename: str) -> bool:
    """An installed package's or the standard library's file, by its path."""
    return bool(_LIBRARY.search(filename))


def is_user_file(filename: str) -> bool:
    """True for the user's own source files (cached per filename: called on hot paths)."""
    hit = judged.get(filename)
    if hit is None:
        hit = judged[filename] = _judge(filename)
    return hit


def _judge(filename: str) -> bool:
    if filename.startswith(NOTEBOOK_CELL):
        return True  # IPython's cells: the user's code, with its source in linecache
    if not filename or filename.startswith("<") or filename == "??" or _COMPILED.search(filename):
        return False
    real = os.path.realpath(filename)
    if real.startswith(_INTERNAL_DIRS) or is_library_file(real):
        return False
    m = _PACKAGE_SEGMENT.match(filename)
    if m is None:
        return True
    return os.path.exists(filename) and not os.path.exists(os.path.join(m.group(1), "__init__.py"))
