"""Terminal statuses of a command, and the exception that carries a rejection.

Every command ends in exactly one of TERMINAL_STATUSES. A rejection names what is wrong: the
argument and its valid range, the unknown opcode, or why execution failed.
"""

from __future__ import annotations

TERMINAL_STATUSES = ("OK", "VALIDATION_ERROR", "FORMAT_ERROR", "EXECUTION_ERROR", "BUSY", "INVALID_OPCODE")


class CommandRejected(Exception):
    """A command could not be executed; status is its terminal response code."""

    def __init__(self, status: str, reason: str) -> None:
        if status not in TERMINAL_STATUSES or status == "OK":
            raise ValueError(f"not a rejection status: {status!r}")
        super().__init__(reason)
        self.status = status
        self.reason = reason
