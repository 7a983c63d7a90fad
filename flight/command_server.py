"""Command handling for any app or service: commands in on ``cmd.<name>``, exactly one terminal
response per command on ``rsp.<name>``.

Command body: ``{"id": int, "opcode": str, "args": {...}}``. Response body:
``{"id", "opcode", "status", "reason", "to"}`` (``to``: the source of the command's publisher, so
each caller picks its own responses out of the shared topic), status one of OK, VALIDATION_ERROR, FORMAT_ERROR,
EXECUTION_ERROR, BUSY, INVALID_OPCODE. A malformed command is answered and counted, never raised.
Every server answers NOOP and RESET_COUNTERS.

The dictionary (flight/dictionary/<name>.toml) declares the server's opcodes and their arguments:
a command is validated against it before its handler runs, so a handler receives typed
arguments with defaults filled in, and a server whose handlers and declarations disagree is a
wiring error raised at construction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from flight.bus import Bus
from flight.command_status import TERMINAL_STATUSES, CommandRejected

if TYPE_CHECKING:
    from flight.dictionary import Dictionary

__all__ = ["TERMINAL_STATUSES", "CommandHandler", "CommandRejected", "CommandServer", "require_choice",
           "require_number"]

CommandHandler = Callable[[dict[str, Any]], None]


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
    def __init__(self, bus: Bus, name: str, handlers: dict[str, CommandHandler], source: str | None = None,
                 dictionary: Dictionary | None = None,
                 on_reset_counters: Callable[[], None] | None = None) -> None:
        from flight.dictionary import default_dictionary

        self.name = name
        self.dictionary = dictionary if dictionary is not None else default_dictionary()
        component = self.dictionary.components.get(name)
        if component is None or not component.commandable:
            raise ValueError(f"command server {name!r}: no commandable component {name!r} in the dictionary")
        declared = self.dictionary.commands_of(name)
        self._pub = bus.publisher(source or name)
        self._commands = bus.subscribe([f"cmd.{name}"], name=f"{name}-commands")
        self._handlers: dict[str, CommandHandler] = {
            "NOOP": lambda args: None,
            "RESET_COUNTERS": self._reset_counters,
            **handlers,
        }
        if set(self._handlers) != set(declared):
            missing = sorted(set(declared) - set(self._handlers))
            undeclared = sorted(set(self._handlers) - set(declared))
            raise ValueError(f"command server {name!r}: handlers and dictionary disagree "
                             f"(declared without handler: {missing}; handled but undeclared: {undeclared})")
        self._declared = declared
        self._on_reset_counters = on_reset_counters
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
            self.execute(message.body, message.source)

    def execute(self, body: dict[str, Any], sender: str = "") -> str:
        """Execute one command body; returns its terminal status (also published as the response)."""
        status, reason = self.run_command(body)
        command_id = body.get("id")
        self._pub.publish(f"rsp.{self.name}", {
            "id": command_id if type(command_id) is int else None,
            "opcode": body.get("opcode") if type(body.get("opcode")) is str else None,
            "status": status, "reason": reason, "to": sender,
        })
        return status

    def run_command(self, body: dict[str, Any]) -> tuple[str, str]:
        """Validate and execute one command body and count it; returns (status, reason), publishes nothing."""
        opcode = body.get("opcode")
        try:
            if not isinstance(opcode, str):
                raise CommandRejected("FORMAT_ERROR", "command has no string 'opcode'")
            if body.get("id") is not None and type(body.get("id")) is not int:
                raise CommandRejected("FORMAT_ERROR", "command 'id' must be an int")
            declared = self._declared.get(opcode)
            if declared is None:
                raise CommandRejected(
                    "INVALID_OPCODE", f"{self.name} has no opcode {opcode[:60]!r} (opcodes: {', '.join(self.opcodes)})"
                )
            handler = self._handlers[opcode]
            args = declared.validate_args(body.get("args"))
            try:
                handler(args)
            except CommandRejected:
                raise
            except Exception as exc:  # a failing handler still ends its command with one response
                raise CommandRejected("EXECUTION_ERROR", f"{type(exc).__name__}: {exc}") from exc
        except CommandRejected as rejected:
            self.rejected += 1
            return rejected.status, rejected.reason
        self.accepted += 1
        return "OK", ""

    def _reset_counters(self, args: dict[str, Any]) -> None:
        self.accepted = 0
        self.rejected = 0
        if self._on_reset_counters is not None:
            self._on_reset_counters()
