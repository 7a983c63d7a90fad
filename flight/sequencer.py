"""The onboard sequencer: stored command sequences run on scheduler ticks (F Prime's CmdSequencer,
cFS SC's ATS/RTS).

Commands (``cmd.sequencer``, declared in ``flight/dictionary/sequencer.toml``):

- ``LOAD {name, text}``: parse and check the sequence text on board with
  ``flight/sequence_format.py``, the same code the ground checker runs (a failure is
  VALIDATION_ERROR naming the lines); replaces an idle sequence of the same name.
- ``START {name}``: run it from its first command. Refused (EXECUTION_ERROR) when it holds an
  absolute time already in the past: a command timed for a ground pass or an eclipse is wrong
  late, so the operator edits the file rather than have it fire at once (F Prime would). Absolute
  times that pass *while* it runs (its earlier commands took longer) issue at once and count as late.
- ``STOP {name}``, ``UNLOAD {name}``; NOOP and RESET_COUNTERS are implied.

Slots: up to ``max_loaded`` (4) named sequences loaded, up to ``max_running`` (2) running at once:
a long timeline of absolute times (the day's plan) beside a short relative one (a contingency or an
ad-hoc procedure), as cFS SC runs an ATS beside RTSs. Two sequences that both arm hazardous commands
never run together (START answers BUSY): the dispatcher holds one arming at a time, and two
interleaved ARMs would steal each other's.

Each tick (``run``, before the dispatcher's ``run`` in the frame): read the dispatcher's answers,
then, for each running sequence in load order, issue its next command if its time has come and the
previous command has answered: one command in flight per sequence, never two. A command goes out on
``cmd.dispatch`` (``{"id", "command", "args"}``, publisher source "sequencer") and its answer comes
back on ``rsp.dispatch`` with ``origin == "sequencer"`` and its id. A status other than OK, or no
answer within ``response_timeout_s`` of mission time, stops the sequence with a WARNING_HI
``SEQUENCE_FAILED`` naming the line, the command, the status and the reason; later commands never
go out. The last OK ends it with ``SEQUENCE_COMPLETED``.

Time: a sequence starts at the first ``run`` after its START (so its first ``R00:00:00`` command
goes out in that tick); R tags count from the previous command's issue tick, E tags from that
start, A tags are UTC, converted with the ``epoch_utc`` the wiring passes (mission time 0). The only
time read is ``ctx.t_ns``: no wall clock, so a SIL run is deterministic.

Wiring: ``run`` before ``dispatcher.run`` (its commands are dispatched in the same tick);
``execute_commands`` after ``dispatcher.run`` and before ``dispatcher.collect`` (like every other
component, so the dispatcher relays its answers in the same tick).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flight.bus import Bus
from flight.command_server import CommandServer
from flight.command_status import CommandRejected
from flight.dictionary import Dictionary, default_dictionary
from flight.events import EventReporter
from flight.rate_group import TickContext
from flight.sequence_format import (
    DEFAULT_ARMING_WINDOW_S,
    DEFAULT_MAX_STEPS,
    Sequence,
    SequenceError,
    Step,
    check_name,
    format_utc_ns,
    parse_sequence,
    utc_ns,
)

COMPONENT = "sequencer"
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class SequencerConfig:
    max_loaded: int = 4
    max_running: int = 2
    # A backstop behind the dispatcher's own timeout (10 s), for a dispatcher that never answers.
    response_timeout_s: float = 30.0
    arming_window_s: float = DEFAULT_ARMING_WINDOW_S
    max_steps: int = DEFAULT_MAX_STEPS

    def __post_init__(self) -> None:
        if not 1 <= self.max_running <= self.max_loaded:
            raise ValueError(f"need 1 <= max_running <= max_loaded, got {self.max_running} and {self.max_loaded}")
        if not self.response_timeout_s > 0 or not self.arming_window_s > 0 or self.max_steps < 1:
            raise ValueError("response_timeout_s and arming_window_s must be > 0 and max_steps >= 1")


@dataclass
class _Slot:
    sequence: Sequence
    state: str = "idle"  # idle, running, completed, failed, stopped
    index: int = 0  # the step to issue next, or the one in flight
    start_ns: int | None = None  # set by the first run after START
    last_issue_ns: int = 0
    pending_id: int | None = None
    issued_ns: int = 0
    next_ns: int | None = None  # due time of the next step while waiting for it
    failure: str = ""  # why it failed (the SEQUENCE_FAILED text)

    @property
    def step(self) -> Step | None:
        steps = self.sequence.steps
        return steps[self.index] if self.index < len(steps) else None


class Sequencer:
    def __init__(self, bus: Bus, epoch_utc: datetime, config: SequencerConfig = SequencerConfig(),
                 dictionary: Dictionary | None = None) -> None:
        self.config = config
        self.dictionary = dictionary if dictionary is not None else default_dictionary()
        self._epoch_ns = utc_ns(epoch_utc)  # raises on a naive datetime
        self._pub = bus.publisher(COMPONENT)
        self._events = EventReporter(bus, COMPONENT, self.dictionary)
        self._responses = bus.subscribe(["rsp.dispatch"], hwm=10_000, name="sequencer-responses")
        self.commands = CommandServer(
            bus, COMPONENT,
            {"LOAD": self._load, "START": self._start, "STOP": self._stop, "UNLOAD": self._unload},
            dictionary=self.dictionary, on_reset_counters=self._reset_counters)
        self.slots: dict[str, _Slot] = {}
        self._in_flight: dict[int, str] = {}  # dispatch id -> sequence name
        self._next_id = 0
        self._now_ns = 0
        self._timeout_ns = round(config.response_timeout_s * NS_PER_S)  # the config is frozen
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.steps_issued = 0
        self.steps_ok = 0
        self.steps_failed = 0
        self.steps_late = 0
        self.sequences_completed = 0
        self.sequences_failed = 0
        self._events.reset_throttles()

    # -- the frame ------------------------------------------------------------------------------

    def execute_commands(self, ctx: TickContext) -> None:
        """LOAD, START, STOP, UNLOAD (after dispatcher.run, so they are answered in the same tick)."""
        self._now_ns = ctx.t_ns
        self.commands.execute_commands(ctx)

    def run(self, ctx: TickContext) -> None:
        """Read the answers, then issue every running sequence's command whose time has come."""
        self._now_ns = now = ctx.t_ns
        self._collect_answers()
        timeout_ns = self._timeout_ns
        for name, slot in self.slots.items():
            if slot.state != "running":
                continue
            if slot.start_ns is None:
                slot.start_ns = slot.last_issue_ns = now
            if slot.pending_id is not None:
                if now - slot.issued_ns >= timeout_ns:
                    self._fail(name, slot, "NO_RESPONSE",
                               f"no answer on rsp.dispatch within {self.config.response_timeout_s:g} s")
                continue
            step = slot.step
            due_ns = self._due_ns(slot, step)
            if due_ns > now:
                slot.next_ns = due_ns
                continue
            self._issue(name, slot, step, due_ns, ctx)
        self._publish_telemetry()

    def _due_ns(self, slot: _Slot, step: Step) -> int:
        if step.kind == "R":
            return slot.last_issue_ns + step.t_ns
        if step.kind == "E":
            return slot.start_ns + step.t_ns
        return step.t_ns - self._epoch_ns  # A: UTC -> mission time

    def _issue(self, name: str, slot: _Slot, step: Step, due_ns: int, ctx: TickContext) -> None:
        self._next_id += 1
        self._pub.publish("cmd.dispatch", {"id": self._next_id, "command": step.command, "args": dict(step.args)})
        self._in_flight[self._next_id] = name
        slot.pending_id = self._next_id
        slot.issued_ns = slot.last_issue_ns = ctx.t_ns
        slot.next_ns = None
        self.steps_issued += 1
        late_ns = ctx.t_ns - due_ns
        if late_ns > ctx.period_ns:
            self.steps_late += 1
            self._events.emit("WARNING_LO", "SEQUENCE_STEP_LATE",
                              f"{name}: line {step.line}: {step.command} issued {late_ns / NS_PER_S:g} s after "
                              f"its time tag {step.tag()}", sequence=name, line=step.line, late_s=late_ns / NS_PER_S)

    def _collect_answers(self) -> None:
        for message in self._responses.drain():
            body = message.body
            if body.get("origin") != COMPONENT or type(body.get("id")) is not int:
                continue  # someone else's (the ground link's)
            name = self._in_flight.pop(body["id"], None)
            slot = self.slots.get(name) if name is not None else None
            if slot is None or slot.pending_id != body["id"]:
                continue  # its sequence was stopped meanwhile
            slot.pending_id = None
            status = body.get("status")
            if status != "OK":
                reason = body.get("reason")
                self._fail(name, slot, status if isinstance(status, str) else repr(status),
                           reason if isinstance(reason, str) else "")
                continue
            self.steps_ok += 1
            slot.index += 1
            if slot.index == len(slot.sequence.steps):
                slot.state = "completed"
                self.sequences_completed += 1
                self._events.emit("ACTIVITY_HI", "SEQUENCE_COMPLETED",
                                  f"{name}: all {len(slot.sequence.steps)} commands ended OK", sequence=name)

    def _fail(self, name: str, slot: _Slot, status: str, reason: str) -> None:
        step = slot.step
        if slot.pending_id is not None:
            self._in_flight.pop(slot.pending_id, None)
        slot.pending_id = None
        slot.state = "failed"
        slot.next_ns = None
        self.steps_failed += 1
        self.sequences_failed += 1
        slot.failure = (f"line {step.line}: {step.command} ended {status}: {reason or '(no reason given)'}; "
                        f"sequence stopped after {slot.index} of {len(slot.sequence.steps)} commands")
        self._events.emit("WARNING_HI", "SEQUENCE_FAILED", f"{name}: {slot.failure}",
                          sequence=name, line=step.line, command=step.command, status=status, reason=reason)

    def _publish_telemetry(self) -> None:
        slots: dict[str, Any] = {}
        running = 0
        for name, slot in self.slots.items():
            if slot.state == "running":
                running += 1
            steps = slot.sequence.steps
            slots[name] = {
                "state": slot.state,
                "line": steps[min(slot.index, len(steps) - 1)].line,
                "step": slot.index,
                "steps": len(steps),
                "next_step_t_s": None if slot.next_ns is None else slot.next_ns / NS_PER_S,
            }
        self._pub.publish(f"tlm.{COMPONENT}", {
            "loaded": len(self.slots),
            "running": running,
            "slots": slots,
            "steps_issued": self.steps_issued,
            "steps_ok": self.steps_ok,
            "steps_failed": self.steps_failed,
            "steps_late": self.steps_late,
            "sequences_completed": self.sequences_completed,
            "sequences_failed": self.sequences_failed,
            "cmd_accepted": self.commands.accepted,
            "cmd_rejected": self.commands.rejected,
        })

    def summary(self) -> dict[str, Any]:
        """Per loaded sequence, for a run summary: state, commands done, and why it failed."""
        return {name: {"state": slot.state, "commands_ok": slot.index, "commands": len(slot.sequence.steps),
                       "failure": slot.failure}
                for name, slot in self.slots.items()}

    # -- commands ------------------------------------------------------------------------------

    def _slot(self, name: str) -> _Slot:
        slot = self.slots.get(name)
        if slot is None:
            loaded = ", ".join(self.slots) or "none"
            raise CommandRejected("EXECUTION_ERROR", f"no sequence named {name!r} is loaded (loaded: {loaded})")
        return slot

    def _load(self, args: dict[str, Any]) -> None:
        name = args["name"]
        problem = check_name(name)
        if problem is not None:
            raise CommandRejected("VALIDATION_ERROR", f"argument 'name': {problem}")
        try:
            sequence = parse_sequence(args["text"], self.dictionary, name=name,
                                      arming_window_s=self.config.arming_window_s, max_steps=self.config.max_steps)
        except SequenceError as exc:
            raise CommandRejected("VALIDATION_ERROR", f"sequence {name!r}: {exc.summary()}") from None
        existing = self.slots.get(name)
        if existing is not None and existing.state == "running":
            raise CommandRejected("EXECUTION_ERROR", f"sequence {name!r} is running: STOP it before loading over it")
        if existing is None and len(self.slots) >= self.config.max_loaded:
            raise CommandRejected("EXECUTION_ERROR", f"all {self.config.max_loaded} slots are used "
                                                     f"({', '.join(self.slots)}): UNLOAD one first")
        self.slots[name] = _Slot(sequence)
        replaced = " (replacing the one loaded)" if existing is not None else ""
        self._events.emit("ACTIVITY_HI", "SEQUENCE_LOADED",
                          f"{name}: {len(sequence.steps)} commands loaded{replaced}", sequence=name,
                          steps=len(sequence.steps))

    def _start(self, args: dict[str, Any]) -> None:
        name = args["name"]
        slot = self._slot(name)
        if slot.state == "running":
            raise CommandRejected("EXECUTION_ERROR", f"sequence {name!r} is already running (line {slot.step.line})")
        running = [n for n, s in self.slots.items() if s.state == "running"]
        if len(running) >= self.config.max_running:
            raise CommandRejected("BUSY", f"{len(running)} sequences are running ({', '.join(running)}), "
                                          f"at most {self.config.max_running}")
        arming = [n for n in running if self.slots[n].sequence.arms]
        if slot.sequence.arms and arming:
            raise CommandRejected("BUSY", f"sequence {name!r} arms hazardous commands and so does running "
                                          f"{arming[0]!r}: the dispatcher holds one arming at a time")
        for step in slot.sequence.steps:
            if step.kind == "A" and step.t_ns - self._epoch_ns < self._now_ns:
                past_s = (self._now_ns - (step.t_ns - self._epoch_ns)) / NS_PER_S
                raise CommandRejected("EXECUTION_ERROR", f"sequence {name!r} line {step.line}: absolute time "
                                                         f"{format_utc_ns(step.t_ns)} is {past_s:g} s in the past "
                                                         f"(now {format_utc_ns(self._epoch_ns + self._now_ns)})")
        self.slots[name] = _Slot(slot.sequence, state="running")
        self._events.emit("ACTIVITY_HI", "SEQUENCE_STARTED",
                          f"{name}: started ({len(slot.sequence.steps)} commands)", sequence=name)

    def _stop(self, args: dict[str, Any]) -> None:
        name = args["name"]
        slot = self._slot(name)
        if slot.state != "running":
            raise CommandRejected("EXECUTION_ERROR", f"sequence {name!r} is not running ({slot.state})")
        if slot.pending_id is not None:
            self._in_flight.pop(slot.pending_id, None)
        slot.pending_id = None
        slot.next_ns = None
        slot.state = "stopped"
        line = slot.step.line if slot.step is not None else slot.sequence.steps[-1].line
        self._events.emit("ACTIVITY_HI", "SEQUENCE_STOPPED",
                          f"{name}: stopped by command at line {line} ({slot.index} of "
                          f"{len(slot.sequence.steps)} commands done)", sequence=name, line=line)

    def _unload(self, args: dict[str, Any]) -> None:
        name = args["name"]
        slot = self._slot(name)
        if slot.state == "running":
            raise CommandRejected("EXECUTION_ERROR", f"sequence {name!r} is running: STOP it first")
        del self.slots[name]
        self._events.emit("ACTIVITY_LO", "SEQUENCE_UNLOADED", f"{name}: unloaded", sequence=name)
