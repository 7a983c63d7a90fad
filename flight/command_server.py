"""Command handling for any app or service: commands in on ``cmd.<name>``, exactly one terminal
response per command on ``rsp.<name>``.

Command body: ``{"id": int, "opcode": str, "args": {...}}``. Response body:
``{"id", "opcode", "status", "reason"}``, status one of OK, VALIDATION_ERROR, FORMAT_ERROR,
EXECUTION_ERROR, BUSY, INVALID_OPCODE. A malformed command is answered and counted, never raised.
Every server answers NOOP and RESET_COUNTERS.
"""

from __future__ import annotations

from typing import Any, Callable

from flight.bus import Bus

CommandHandler = Callable[[dict[str, Any]], None]

TERMINAL_STATUSES = ("OK", "VALIDATION_ERROR", "FORMAT_ERROR", "EXECUTION_ERROR", "BUSY", "INVALID_OPCODE")


class CommandRejected(Exception):
    """A command could not be executed; status is its terminal response code."""

    def __init__(self, status: str, reason: str) -> None:
        if status not in TERMINAL_STATUSES or status == "OK":
            raise ValueError(f"not a rejection status: {status!r}")
        super().__init__(reason)
        self.status = status
        self.reason = reason


def require_number(args: dict[str, Any], key: str, lo: float, hi: float) -> float:
    """Validate one numeric argument, naming it and its valid range on rejection."""
    if key not in args:
        raise CommandRejected("FORMAT_ERROR", f"missing argument {key!r}")
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommandRejected("FORMAT_ERROR", f"argument {key!r} must be a number, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise CommandRejected("VALIDATION_ERROR", f"argument {key!r}={value!r} out of range [{lo:g}, {hi:g}]")
    return float(value)


def require_choice(args: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    """Validate one enumerated string argument, naming it and its valid values on rejection."""
    if key not in args:
        raise CommandRejected("FORMAT_ERROR", f"missing argument {key!r}")
    value = args[key]
    if not isinstance(value, str):
        raise CommandRejected("FORMAT_ERROR", f"argument {key!r} must be a string, got {type(value).__name__}")
    if value not in choices:
        raise CommandRejected("VALIDATION_ERROR", f"argument {key!r}={value!r} is not one of {', '.join(choices)}")
    return value


class CommandServer:
    def __init__(self, bus: Bus, name: str, handlers: dict[str, CommandHandler], source: str | None = None) -> None:
        self.name = name
        self._pub = bus.publisher(source or name)
        self._commands = bus.subscribe([f"cmd.{name}"], name=f"{name}-commands")
        self._handlers: dict[str, CommandHandler] = {
            "NOOP": lambda args: None,
            "RESET_COUNTERS": self._reset_counters,
            **handlers,
        }
        self.accepted = 0
        self.rejected = 0

    @property
    def opcodes(self) -> list[str]:
        return sorted(self._handlers)

    @property
    def subscription(self):
        return self._commands

    def execute_commands(self, ctx=None) -> None:
        for message in self._commands.drain():
            self.execute(message.body)

    def execute(self, body: dict[str, Any]) -> str:
        """Execute one command body; returns its terminal status (also published as the response)."""
        command_id = body.get("id") if isinstance(body.get("id"), int) else None
        opcode = body.get("opcode")
        try:
            if not isinstance(opcode, str):
                raise CommandRejected("FORMAT_ERROR", "command has no string 'opcode'")
            handler = self._handlers.get(opcode)
            if handler is None:
                raise CommandRejected(
                    "INVALID_OPCODE", f"{self.name} has no opcode {opcode!r} (opcodes: {', '.join(self.opcodes)})"
                )
            args = body.get("args", {})
            if not isinstance(args, dict):
                raise CommandRejected("FORMAT_ERROR", "'args' must be a map")
            try:
                handler(args)
            except CommandRejected:
                raise
            except (ValueError, KeyError, TypeError) as exc:
                raise CommandRejected("EXECUTION_ERROR", str(exc)) from exc
        except CommandRejected as rejected:
            self.rejected += 1
            self._respond(command_id, opcode, rejected.status, rejected.reason)
            return rejected.status
        self.accepted += 1
        self._respond(command_id, opcode, "OK", "")
        return "OK"

    def _respond(self, command_id: int | None, opcode: Any, status: str, reason: str) -> None:
        self._pub.publish(f"rsp.{self.name}", {
            "id": command_id, "opcode": opcode if isinstance(opcode, str) else None,
            "status": status, "reason": reason,
        })

    def _reset_counters(self, args: dict[str, Any]) -> None:
        self.accepted = 0
        self.rejected = 0
