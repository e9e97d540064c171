"""Sizes: parsing what users type (``8GiB``, ``512MiB``, ``1.5GB``) and printing bytes."""

from __future__ import annotations

import re

from memprof.errors import MemprofError

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """``'8GiB'`` -> 8589934592. Decimal units (GB) are powers of 1000, binary ones (GiB) of 1024."""
    m = _SIZE.match(str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise MemprofError(f"invalid size {text!r}: use a number and a unit, e.g. 8GiB, 512MiB, 1.5GB")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value <= 0:
        raise MemprofError(f"invalid size {text!r}: must be positive")
    return int(value)


def fmt_bytes(n: int | float | None, signed: bool = False) -> str:
    """Binary units, three significant digits: ``1.50 GiB``, ``512 MiB``, ``12.0 KiB``."""
    if n is None:
        return "n/a"
    sign = "-" if n < 0 else ("+" if signed and n > 0 else "")
    v = float(abs(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if v < 1024 or unit == "TiB":
            if unit == "B":
                return f"{sign}{int(v)} B"
            digits = 2 if v < 10 else 1 if v < 100 else 0
            return f"{sign}{v:.{digits}f} {unit}"
        v /= 1024
    return f"{sign}{v:.1f} TiB"
