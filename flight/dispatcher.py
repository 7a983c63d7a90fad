"""The command dispatcher: the one door for ground and sequence commands (F Prime's CmdDispatcher).

A caller publishes ``{"id": int, "command": "component.OPCODE", "args": {...}}`` on
``cmd.dispatch``. The dispatcher checks the command against the dictionary (unknown name:
INVALID_OPCODE; malformed, missing or mistyped argument: FORMAT_ERROR; out of range:
VALIDATION_ERROR, naming the argument and its valid range), refuses a hazardous command that was
not armed (EXECUTION_ERROR), refuses when too many commands are in flight (BUSY), and otherwise
forwards it to ``cmd.<component>``. The component's answer comes back on ``rsp.<component>``;
the dispatcher relays it. Every command gets exactly one terminal response on ``rsp.dispatch``:
``{"id", "origin", "command", "status", "reason"}``, where ``origin`` is the caller's source, so
several callers (the ground link, the sequencer) share the topic. A component that does not
answer within ``response_timeout_s`` of mission time ends its command with EXECUTION_ERROR.

Arming (a two-step hazardous command, as cFS and F Prime operators know it): ``dispatcher.ARM
command=eps.SET_SWITCH`` arms that one command for ``arm_window_s`` of mission time; the next
``eps.SET_SWITCH`` uses up the arming. ``dispatcher.DISARM`` cancels it.

Frame position: ``run`` early in the frame (after telemetry is sampled, before the components
drain their commands), ``collect`` last, so a command sent between two ticks is answered within
one tick. Nothing here reads the wall clock: every time is the tick's mission time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flight.bus import Bus, Message
from flight.command_server import CommandServer
from flight.command_status import CommandRejected
from flight.dictionary import Dictionary, default_dictionary
from flight.events import EventReporter
from flight.rate_group import TickContext

NS_PER_S = 1_000_000_000
COMPONENT = "dispatcher"
_STATUS_COUNTERS = {
    "OK": "ok", "VALIDATION_ERROR": "validation_errors", "FORMAT_ERROR": "format_errors",
    "EXECUTION_ERROR": "execution_errors", "BUSY": "busy", "INVALID_OPCODE": "invalid_opcodes",
}


@dataclass(frozen=True)
class DispatcherConfig:
    arm_window_s: float = 60.0
    max_pending: int = 16
    response_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.arm_window_s > 0 or not self.response_timeout_s > 0 or self.max_pending < 1:
            raise ValueError("arm_window_s and response_timeout_s must be > 0 and max_pending >= 1")


@dataclass
class _Pending:
    origin: str
    caller_id: Any
    command: str
    deadline_ns: int


class Dispatcher:
    def __init__(self, bus: Bus, dictionary: Dictionary | None = None,
                 config: DispatcherConfig = DispatcherConfig()) -> None:
        self.dictionary = dictionary if dictionary is not None else default_dictionary()
        self.config = config
        self._pub = bus.publisher(COMPONENT)
        self._events = EventReporter(bus, COMPONENT, self.dictionary)
        self._inbox = bus.subscribe(["cmd.dispatch"], hwm=10_000, name="dispatcher-inbox")
        # Every component's answers (rsp.dispatch is ours, filtered out by the 'to' field).
        self._answers = bus.subscribe(["rsp."], hwm=10_000, name="dispatcher-answers")
        self.commands = CommandServer(bus, COMPONENT, {"ARM": self._arm, "DISARM": self._disarm},
                                      dictionary=self.dictionary, on_reset_counters=self._reset_counters)
        self.counters = dict.fromkeys(_STATUS_COUNTERS.values(), 0)
        self.dispatched = 0
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._next_id = 0
        self.armed: str | None = None
        self.armed_until_ns = 0
        self._now_ns = 0

    # -- the frame ------------------------------------------------------------------------------

    def run(self, ctx: TickContext) -> None:
        """Validate and route every command that arrived since the last tick."""
        self._now_ns = ctx.t_ns
        self._expire_arming()
        for message in self._inbox.drain():
            self._dispatch(message)

    def collect(self, ctx: TickContext) -> None:
        """Relay the components' answers; time out the commands nobody answered."""
        self._now_ns = ctx.t_ns
        for message in self._answers.drain():
            if message.body.get("to") != COMPONENT:
                continue
            component = message.topic[4:]
            pending = self._pending.pop((component, message.body.get("id")), None)
            if pending is None:
                continue  # an answer to a command that already timed out
            status = message.body.get("status")
            reason = message.body.get("reason")
            if status not in _STATUS_COUNTERS:
                status, reason = "EXECUTION_ERROR", f"{component} answered with an unknown status {status!r}"
            self._respond(pending.origin, pending.caller_id, pending.command, status,
                          reason if isinstance(reason, str) else "")
        for key, pending in list(self._pending.items()):
            if ctx.t_ns >= pending.deadline_ns:
                del self._pending[key]
                self._respond(pending.origin, pending.caller_id, pending.command, "EXECUTION_ERROR",
                              f"no response from {key[0]} within {self.config.response_timeout_s:g} s")

    def publish_telemetry(self, ctx: TickContext | None = None) -> None:
        expires = (self.armed_until_ns - self._now_ns) / NS_PER_S if self.armed else None
        self._pub.publish(f"tlm.{COMPONENT}", {
            "dispatched": self.dispatched, **self.counters, "pending": len(self._pending),
            "armed": self.armed or "", "armed_expires_in_s": expires,
            "cmd_accepted": self.commands.accepted, "cmd_rejected": self.commands.rejected,
        })

    # -- one command -----------------------------------------------------------------------------

    def _dispatch(self, message: Message) -> None:
        body = message.body
        origin = message.source
        caller_id = body.get("id")
        name = body.get("command")
        shown = name if type(name) is str else "?"
        try:
            if type(caller_id) is not int:
                raise CommandRejected("FORMAT_ERROR", "command 'id' must be an int")
            if type(name) is not str:
                raise CommandRejected("FORMAT_ERROR", "command has no string 'command' (component.OPCODE)")
            command, args = self.dictionary.validate_command(name, body.get("args"))
            if command.hazardous:
                self._use_arming(name)
            if command.component == COMPONENT:
                status, reason = self.commands.run_command({"opcode": command.opcode, "args": args})
                self._respond(origin, caller_id, name, status, reason)
                return
            if len(self._pending) >= self.config.max_pending:
                raise CommandRejected("BUSY", f"{len(self._pending)} commands in flight (at most "
                                              f"{self.config.max_pending}); send again later")
        except CommandRejected as rejected:
            self._respond(origin, caller_id if type(caller_id) is int else None, shown,
                          rejected.status, rejected.reason)
            return
        self._next_id += 1
        self._pending[(command.component, self._next_id)] = _Pending(
            origin, caller_id, name, self._now_ns + round(self.config.response_timeout_s * NS_PER_S))
        self._pub.publish(f"cmd.{command.component}", {"id": self._next_id, "opcode": command.opcode, "args": args})
        self.dispatched += 1
        self._events.emit("COMMAND", "COMMAND_DISPATCHED", f"{name} from {origin} (id {caller_id})",
                          command=name, origin=origin)

    def _respond(self, origin: str, caller_id: Any, command: str, status: str, reason: str) -> None:
        self.counters[_STATUS_COUNTERS[status]] += 1
        self._pub.publish("rsp.dispatch", {"id": caller_id, "origin": origin, "command": command,
                                           "status": status, "reason": reason})
        if status == "OK":
            self._events.emit("COMMAND", "COMMAND_COMPLETED", f"{command} from {origin}: OK",
                              command=command, origin=origin)
        else:
            self._events.emit("WARNING_LO", "COMMAND_REJECTED", f"{command} from {origin}: {status}: {reason}",
                              command=command, origin=origin, status=status)

    def _reset_counters(self) -> None:
        self.counters = dict.fromkeys(_STATUS_COUNTERS.values(), 0)
        self.dispatched = 0
        self._events.reset_throttles()

    # -- arming ---------------------------------------------------------------------------------

    def _use_arming(self, name: str) -> None:
        if self.armed != name:
            armed = f"armed: {self.armed}" if self.armed else "nothing is armed"
            raise CommandRejected("EXECUTION_ERROR", f"{name} is hazardous: send dispatcher.ARM command={name} "
                                                     f"first, then {name} within {self.config.arm_window_s:g} s "
                                                     f"({armed})")
        self.armed = None
        self._events.emit("ACTIVITY_HI", "COMMAND_DISARMED", f"{name}: arming used")

    def _expire_arming(self) -> None:
        if self.armed is not None and self._now_ns > self.armed_until_ns:
            name, self.armed = self.armed, None
            self._events.emit("ACTIVITY_HI", "COMMAND_DISARMED",
                              f"{name}: arming expired after {self.config.arm_window_s:g} s")

    def _arm(self, args: dict[str, Any]) -> None:
        name = args["command"]
        hazardous = self.dictionary.hazardous_commands()
        if name not in hazardous:
            raise CommandRejected("VALIDATION_ERROR", f"argument 'command'={name!r} is not a hazardous command "
                                                      f"(hazardous: {', '.join(hazardous) or 'none'})")
        self.armed = name
        self.armed_until_ns = self._now_ns + round(self.config.arm_window_s * NS_PER_S)
        self._events.emit("WARNING_HI", "COMMAND_ARMED",
                          f"{name} armed for {self.config.arm_window_s:g} s", command=name)

    def _disarm(self, args: dict[str, Any]) -> None:
        if self.armed is not None:
            name, self.armed = self.armed, None
            self._events.emit("ACTIVITY_HI", "COMMAND_DISARMED", f"{name}: disarmed by command")
