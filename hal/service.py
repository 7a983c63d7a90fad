"""A device as a bus service: telemetry out on ``tlm.<name>``, commands in on ``cmd.<name>``,
one terminal response per command on ``rsp.<name>``.

Command message body: ``{"id": int, "opcode": str, "args": {...}}``. Response body:
``{"id", "opcode", "status", "reason"}`` with status one of OK, VALIDATION_ERROR, FORMAT_ERROR,
EXECUTION_ERROR, INVALID_OPCODE. A malformed command is answered and counted, never raised.
Every service answers NOOP and RESET_COUNTERS.
"""

from __future__ import annotations

from typing import Any

from flight.bus import Bus
from flight.rate_group import TickContext
from hal.interfaces import CommandRejected, Device


class DeviceService:
    def __init__(self, device: Device, bus: Bus) -> None:
        self.device = device
        self.name = device.name
        self._pub = bus.publisher(self.name)
        self._commands = bus.subscribe([f"cmd.{self.name}"], name=f"{self.name}-commands")
        self._handlers = {
            "NOOP": lambda args: None,
            "RESET_COUNTERS": self._reset_counters,
            **device.command_handlers(),
        }
        self.commands_accepted = 0
        self.commands_rejected = 0

    @property
    def opcodes(self) -> list[str]:
        return sorted(self._handlers)

    def publish_telemetry(self, ctx: TickContext | None = None) -> None:
        body = self.device.read()
        body["cmd_accepted"] = self.commands_accepted
        body["cmd_rejected"] = self.commands_rejected
        self._pub.publish(f"tlm.{self.name}", body)

    def execute_commands(self, ctx: TickContext | None = None) -> None:
        for message in self._commands.drain():
            self._execute(message.body)

    def _execute(self, body: dict[str, Any]) -> None:
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
            self.commands_rejected += 1
            self._respond(command_id, opcode, rejected.status, rejected.reason)
            return
        self.commands_accepted += 1
        self._respond(command_id, opcode, "OK", "")

    def _respond(self, command_id: int | None, opcode: Any, status: str, reason: str) -> None:
        self._pub.publish(f"rsp.{self.name}", {
            "id": command_id, "opcode": opcode if isinstance(opcode, str) else None,
            "status": status, "reason": reason,
        })

    def _reset_counters(self, args: dict[str, Any]) -> None:
        self.commands_accepted = 0
        self.commands_rejected = 0
