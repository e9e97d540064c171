"""The one error class of memprof: a message for the user and the exit code to leave with."""

from __future__ import annotations


class MemprofError(Exception):
    """A problem memprof reports to the user in one line (usage errors exit 2)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
