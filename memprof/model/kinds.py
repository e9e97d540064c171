"""Open enumerations: a known set of values, and any other string kept as it is.

A report written by a newer memprof can hold a finding or recommendation kind this version does not
know; reading it must neither fail nor lose the kind.
"""

from __future__ import annotations

import enum
from typing import Any


class OpenEnum(str, enum.Enum):
    """A ``str`` enum whose unknown values become members on first use (kept, never rejected)."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        # Cached, so that the same unknown value gives the same member (identity comparisons hold).
        return cls._value2member_map_.setdefault(value, member)

    @property
    def known(self) -> bool:
        return self._name_ in type(self).__members__
