"""Bytes the C allocator has handed out: what watch mode reads on CPU at a step boundary.

Known limitations:
- Only where the C library has glibc's ``mallinfo2`` (glibc 2.33 on): None elsewhere (musl, macOS).
- It counts every ``malloc``, not only tensor storages (CPU tensor storages are most of it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

_heap_counter: Callable[[], int] | None = None
_heap_counter_loaded = False


def heap_in_use_bytes() -> int | None:
    """Bytes the C allocator has handed out and not taken back (glibc's ``mallinfo2``): CPU
    tensor storages and little else. What watch mode reads on CPU at a step boundary: unlike
    the resident set size it neither keeps freed pages nor jumps by whole arenas. 0.4 µs a read.
    None where the C library has no ``mallinfo2`` (musl, macOS, glibc before 2.33)."""
    global _heap_counter, _heap_counter_loaded
    if not _heap_counter_loaded:
        _heap_counter_loaded = True
        _heap_counter = _load_mallinfo2()
    return _heap_counter() if _heap_counter is not None else None


def _load_mallinfo2() -> Callable[[], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                "keepcost")]

        fn = ctypes.CDLL("libc.so.6").mallinfo2
        fn.restype = MallInfo2
        fn.argtypes = []
    except (OSError, AttributeError):
        return None

    def in_use() -> int:
        info = fn()
        return int(info.uordblks + info.hblkhd)  # small chunks in use + mmapped large ones

    return in_use
