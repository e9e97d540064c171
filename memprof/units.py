"""Sizes: parsing what users type (``8GiB``, ``512MiB``, ``1.5GB``) and printing bytes."""

from __future__ import annotations

import re

from memprof.errors import MemprofError

_UNITS = {
    "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([+-]?)\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
EXAMPLES = "5GiB, 512MiB, 800MB…"


def parse_size(text: str) -> int:
    """``'8GiB'`` -> 8589934592. Decimal units (GB) are powers of 1000, binary ones (GiB) of 1024.

    A unit is required (``B`` for bytes: a bare ``5`` is far more likely a typo for 5 GiB than
    five bytes), and the size must be positive; each mistake is a :class:`MemprofError` that says
    what to write instead."""
    m = _SIZE.match(str(text))
    if not m or (m.group(3) and m.group(3).lower() not in _UNITS):
        raise MemprofError(f"invalid size {text!r}: write a number and a unit, e.g. {EXAMPLES}")
    sign, number, unit = m.groups()
    if not unit:
        raise MemprofError(f"{text!r} has no unit; write {number}GiB, 512MiB, 800MB… (or {number}B for bytes)")
    value = float(number) * _UNITS[unit.lower()]
    if sign == "-" and value > 0:
        raise MemprofError(f"{text!r} is negative; a size is positive, e.g. {EXAMPLES}")
    if int(value) <= 0:
        raise MemprofError(f"invalid size {text!r}: must be at least 1 byte, e.g. {EXAMPLES}")
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
