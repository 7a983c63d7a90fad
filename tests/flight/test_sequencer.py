"""The onboard sequencer: timing in simulated time, failures stop a sequence, slots and START rules.

The rig is a real bus on a SteppedClock ticked in 1 s steps, the real Dispatcher, a real
ModeManager, and a stand-in EPS command server (for the hazardous eps.SET_SWITCH). Frame order is
the one recommended for SIL: sequencer.run -> dispatcher.run -> components -> sequencer commands
-> dispatcher.collect. Ground commands go in on cmd.dispatch from source "ground_link".
"""

import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from flight.bus import Bus
from flight.clock import SteppedClock, iso_utc
from flight.command_server import CommandServer
from flight.dictionary import default_dictionary
from flight.dispatcher import Dispatcher, DispatcherConfig
from flight.modes import ModeConfig, ModeManager
from flight.rate_group import TickContext
from flight.sequencer import Sequencer, SequencerConfig

NS = 1_000_000_000
EPOCH = datetime(2025, 11, 2, 6, 30, tzinfo=timezone.utc)


def at(seconds):
    """An absolute time tag `seconds` after the epoch."""
    return "A" + iso_utc(EPOCH + timedelta(seconds=seconds))


class Rig:
    def __init__(self, config=SequencerConfig(), dispatcher=True, dispatcher_config=DispatcherConfig(),
                 slow_thermal_every=None):
        self.clock = SteppedClock(EPOCH)
        self.bus = Bus(self.clock.now_ns, name="sequencer-test")
        self.tick = 0
        self.soc = 0.9
        self.sequencer = Sequencer(self.bus, EPOCH, config)
        self.dispatcher = Dispatcher(self.bus, config=dispatcher_config) if dispatcher else None
        self.modes = ModeManager(self.bus, ModeConfig(dod_limit=0.30))
        self.switch_calls = []
        self.eps = CommandServer(self.bus, "eps", {"SET_SWITCH": self.switch_calls.append})
        # A component that answers only every N ticks (to make a sequence wait).
        self.thermal = CommandServer(self.bus, "thermal", {}) if slow_thermal_every else None
        self.slow_every = slow_thermal_every
        self._eps_tlm = self.bus.publisher("eps")
        self.ground = self.bus.publisher("ground_link")
        self._spy = self.bus.subscribe(["cmd.dispatch"], name="spy")
        self._watch = self.bus.subscribe(["rsp.dispatch", "evt.sequencer", "tlm.sequencer"], name="watch")
        self.bus.settle()
        self.dispatches = []  # (tick, command, args) of every command the sequencer issued
        self.ground_responses = []
        self.events = []
        self.tlm = None
        self._ground_id = 0

    def send(self, command, **args):
        self._ground_id += 1
        self.ground.publish("cmd.dispatch", {"id": self._ground_id, "command": command, "args": args})

    def load_and_start(self, text, name="s"):
        self.send("sequencer.LOAD", name=name, text=text)
        self.send("sequencer.START", name=name)

    def step(self):
        ctx = TickContext(tick=self.tick, t_ns=self.clock.now_ns(), period_ns=NS)
        self._eps_tlm.publish("tlm.eps", {"battery_soc": self.soc})
        self.sequencer.run(ctx)
        if self.dispatcher:
            self.dispatcher.run(ctx)
        self.modes.run(ctx)
        self.eps.execute_commands(ctx)
        if self.thermal is not None and self.tick % self.slow_every == 0:
            self.thermal.execute_commands(ctx)
        self.sequencer.execute_commands(ctx)
        if self.dispatcher:
            self.dispatcher.collect(ctx)
        for m in self._spy.drain():
            if m.source == "sequencer":
                self.dispatches.append((self.tick, m.body["command"], m.body["args"]))
        for m in self._watch.drain():
            if m.topic == "rsp.dispatch" and m.body["origin"] == "ground_link":
                self.ground_responses.append((self.tick, m.body["command"], m.body["status"], m.body["reason"]))
            elif m.topic == "evt.sequencer":
                self.events.append((self.tick, m.body))
            elif m.topic == "tlm.sequencer":
                self.tlm = m.body
        self.tick += 1
        self.clock.advance(NS)

    def run(self, n):
        for _ in range(n):
            self.step()

    def event_names(self):
        return [body["name"] for _, body in self.events]

    def close(self):
        self.bus.close()


@pytest.fixture
def rig():
    rigs = []

    def make(**kwargs):
        rigs.append(Rig(**kwargs))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


# --------------------------------------------------------------------------- timing in simulated time


def test_commands_issue_exactly_at_their_time_tags(rig):
    r = rig()
    r.load_and_start(f"""
R00:00:00   modes.NOOP                  ; started at tick 1 (the first run after START at tick 0)
R00:00:03   dispatcher.NOOP             ; 3 s after the previous command was issued
E+00:00:10  modes.NOOP                  ; 10 s after the start: 1 + 10
{at(20)}    sequencer.NOOP              ; absolute UTC: epoch + 20 s
R00:00:00   modes.SET_MODE mode=LOW_POWER   ; as soon as the previous one has answered (next tick)
R00:00:02.5 modes.NOOP                  ; 21 + 2.5 -> the first tick at or after it
R00:00:01   modes.SET_MODE mode=NOMINAL ; counted from the actual issue (24), not the tag (23.5)
""")
    r.run(40)
    assert r.ground_responses[:2] == [(0, "sequencer.LOAD", "OK", ""), (0, "sequencer.START", "OK", "")]
    assert [(tick, command) for tick, command, _ in r.dispatches] == [
        (1, "modes.NOOP"), (4, "dispatcher.NOOP"), (11, "modes.NOOP"), (20, "sequencer.NOOP"),
        (21, "modes.SET_MODE"), (24, "modes.NOOP"), (25, "modes.SET_MODE")]
    assert r.event_names() == ["SEQUENCE_LOADED", "SEQUENCE_STARTED", "SEQUENCE_COMPLETED"]
    completed_tick = r.events[-1][0]
    assert completed_tick == 26  # the last answer (tick 25) is read at the next run
    assert r.modes.mode == "NOMINAL" and r.modes.transitions == 2
    assert r.tlm["steps_issued"] == r.tlm["steps_ok"] == 7 and r.tlm["steps_late"] == 0
    assert r.tlm["slots"]["s"]["state"] == "completed" and r.tlm["sequences_completed"] == 1


def test_next_step_time_is_in_telemetry(rig):
    r = rig()
    r.load_and_start("R00:00:00 modes.NOOP\nR00:01:00 modes.NOOP\n")
    r.run(5)
    slot = r.tlm["slots"]["s"]
    assert slot == {"state": "running", "line": 2, "step": 1, "steps": 2, "next_step_t_s": 61.0}
    assert r.tlm["running"] == 1 and r.tlm["loaded"] == 1


def test_a_command_that_fails_stops_the_sequence_with_an_event(rig):
    r = rig()
    r.soc = 0.71  # below the 72 % NOMINAL needs: the guard refuses
    r.load_and_start("""; line 1
R00:00:00 modes.SET_MODE mode=LOW_POWER
R00:00:02 modes.SET_MODE mode=NOMINAL
R00:00:02 modes.NOOP
E+00:00:30 dispatcher.NOOP
""")
    r.run(60)
    assert [(tick, command) for tick, command, _ in r.dispatches] == [(1, "modes.SET_MODE"), (3, "modes.SET_MODE")]
    (failed,) = [body for _, body in r.events if body["name"] == "SEQUENCE_FAILED"]
    assert failed["severity"] == "WARNING_HI"
    assert (failed["sequence"], failed["line"], failed["command"], failed["status"]) == (
        "s", 3, "modes.SET_MODE", "EXECUTION_ERROR")
    assert "battery SoC 71.0% is below the 72.0% that NOMINAL needs" in failed["reason"]
    assert "s: line 3: modes.SET_MODE ended EXECUTION_ERROR" in failed["text"]
    assert "SEQUENCE_COMPLETED" not in r.event_names()
    assert r.tlm["slots"]["s"]["state"] == "failed" and r.tlm["steps_failed"] == 1 and r.tlm["sequences_failed"] == 1
    summary = r.sequencer.summary()["s"]
    assert (summary["state"], summary["commands_ok"], summary["commands"]) == ("failed", 1, 4)
    assert summary["failure"].startswith("line 3: modes.SET_MODE ended EXECUTION_ERROR: mode NOMINAL refused")


def test_hazardous_command_armed_in_the_sequence_goes_through_the_dispatcher(rig):
    r = rig()
    r.load_and_start("R00:00:00 dispatcher.ARM command=eps.SET_SWITCH\nR00:00:05 eps.SET_SWITCH switch=gpu on=false\n")
    r.run(10)
    assert r.switch_calls == [{"switch": "gpu", "on": False}]
    assert [(t, c) for t, c, _ in r.dispatches] == [(1, "dispatcher.ARM"), (6, "eps.SET_SWITCH")]
    assert r.event_names()[-1] == "SEQUENCE_COMPLETED"


def test_the_dispatcher_enforces_its_own_arming_window_too(rig):
    # The file passes the ground check (60 s window) but this dispatcher arms for 5 s only.
    r = rig(dispatcher_config=DispatcherConfig(arm_window_s=5.0))
    r.load_and_start("R00:00:00 dispatcher.ARM command=eps.SET_SWITCH\nR00:00:10 eps.SET_SWITCH switch=gpu on=true\n")
    r.run(15)
    assert r.switch_calls == []
    (failed,) = [body for _, body in r.events if body["name"] == "SEQUENCE_FAILED"]
    assert failed["line"] == 2 and failed["status"] == "EXECUTION_ERROR" and "hazardous" in failed["reason"]


def test_no_answer_within_the_timeout_fails_the_sequence(rig):
    r = rig(config=SequencerConfig(response_timeout_s=5.0), dispatcher=False)
    r.sequencer.execute_commands(TickContext(0, 0, NS))  # nothing queued: a no-op
    r.sequencer.commands.execute({"id": 1, "opcode": "LOAD", "args": {"name": "s", "text": "R00:00:00 modes.NOOP\nR00:00:01 modes.NOOP\n"}})
    r.sequencer.commands.execute({"id": 2, "opcode": "START", "args": {"name": "s"}})
    r.run(10)
    assert [t for t, _, _ in r.dispatches] == [0]
    (failed,) = [(tick, body) for tick, body in r.events if body["name"] == "SEQUENCE_FAILED"]
    assert failed[0] == 5 and failed[1]["status"] == "NO_RESPONSE" and failed[1]["line"] == 1


def test_a_step_whose_time_passed_while_waiting_runs_at_once_and_is_reported_late(rig):
    r = rig(slow_thermal_every=6)  # thermal answers at ticks 0, 6, 12...
    r.load_and_start("R00:00:00 thermal.NOOP\nE+00:00:02 modes.NOOP\nR00:00:01 modes.NOOP\n")
    r.run(12)
    assert [(t, c) for t, c, _ in r.dispatches] == [(1, "thermal.NOOP"), (7, "modes.NOOP"), (8, "modes.NOOP")]
    late = [body for _, body in r.events if body["name"] == "SEQUENCE_STEP_LATE"]
    assert [(b["line"], b["late_s"]) for b in late] == [(2, 4.0)]  # due at 1 + 2 = 3, issued at 7
    assert r.tlm["steps_late"] == 1 and r.event_names()[-1] == "SEQUENCE_COMPLETED"


# --------------------------------------------------------------------------- commands and slots


def test_load_checks_the_text_on_board_and_names_the_lines(rig):
    r = rig()
    r.send("sequencer.LOAD", name="bad", text="R00:00:00 modes.NOOP\nR00:00:01 modes.SET_MODE mode=TURBO\nR9 modes.NOOP\n")
    r.run(1)
    ((_, command, status, reason),) = r.ground_responses
    assert (command, status) == ("sequencer.LOAD", "VALIDATION_ERROR")
    assert "line 2: modes.SET_MODE: argument 'mode'='TURBO'" in reason and "line 3: bad time tag 'R9'" in reason
    assert r.sequencer.slots == {}


def test_start_refuses_an_absolute_time_already_past(rig):
    r = rig()
    r.run(30)
    r.load_and_start(f"R00:00:00 modes.NOOP\n{at(20)} modes.NOOP\n")
    r.run(3)
    load, start = r.ground_responses
    assert load[2] == "OK" and start[2] == "EXECUTION_ERROR"
    assert "line 2: absolute time 2025-11-02T06:30:20Z is 10 s in the past (now 2025-11-02T06:30:30Z)" in start[3]
    assert r.dispatches == []


def test_slots_stop_unload_restart_and_limits(rig):
    r = rig(config=SequencerConfig(max_loaded=2, max_running=1))
    r.send("sequencer.LOAD", name="a", text="R00:00:00 modes.NOOP\nR00:00:10 modes.NOOP\n")
    r.send("sequencer.LOAD", name="b", text="R00:00:00 dispatcher.NOOP\n")
    r.send("sequencer.LOAD", name="c", text="R00:00:00 modes.NOOP\n")
    r.send("sequencer.START", name="a")
    r.send("sequencer.START", name="b")
    r.send("sequencer.UNLOAD", name="a")
    r.send("sequencer.LOAD", name="a", text="R00:00:00 modes.NOOP\n")
    r.run(3)
    statuses = [(c, s) for _, c, s, _ in r.ground_responses]
    assert statuses == [("sequencer.LOAD", "OK"), ("sequencer.LOAD", "OK"), ("sequencer.LOAD", "EXECUTION_ERROR"),
                        ("sequencer.START", "OK"), ("sequencer.START", "BUSY"), ("sequencer.UNLOAD", "EXECUTION_ERROR"),
                        ("sequencer.LOAD", "EXECUTION_ERROR")]
    assert "all 2 slots are used (a, b)" in r.ground_responses[2][3]
    r.ground_responses.clear()
    r.send("sequencer.STOP", name="a")
    r.run(15)
    assert [(t, c) for t, c, _ in r.dispatches] == [(1, "modes.NOOP")]  # the second never goes out
    assert r.tlm["slots"]["a"]["state"] == "stopped" and "SEQUENCE_STOPPED" in r.event_names()
    r.send("sequencer.STOP", name="a")
    r.send("sequencer.START", name="a")  # again from its first command
    r.send("sequencer.START", name="zz")
    r.run(1)
    assert [(s, re.sub(r"\(.*", "", why)) for _, _, s, why in r.ground_responses] == [
        ("OK", ""), ("EXECUTION_ERROR", "sequence 'a' is not running "), ("OK", ""),
        ("EXECUTION_ERROR", "no sequence named 'zz' is loaded ")]
    r.run(15)
    assert [t for t, _, _ in r.dispatches] == [1, 19, 29]


def test_two_sequences_run_side_by_side_but_not_two_that_arm(rig):
    r = rig()
    arm = "R00:00:00 dispatcher.ARM command=eps.SET_SWITCH\nR00:00:05 eps.SET_SWITCH switch=gpu on=true\n"
    r.send("sequencer.LOAD", name="x", text="R00:00:00 modes.NOOP\nR00:00:02 modes.NOOP\n")
    r.send("sequencer.LOAD", name="y", text="R00:00:01 dispatcher.NOOP\nR00:00:01 dispatcher.NOOP\n")
    r.send("sequencer.LOAD", name="arm1", text=arm)
    r.send("sequencer.LOAD", name="arm2", text=arm)
    for name in ("x", "y"):
        r.send("sequencer.START", name=name)
    r.run(6)
    assert sorted((t, c) for t, c, _ in r.dispatches) == [
        (1, "modes.NOOP"), (2, "dispatcher.NOOP"), (3, "dispatcher.NOOP"), (3, "modes.NOOP")]
    r.send("sequencer.START", name="arm1")
    r.send("sequencer.START", name="arm2")
    r.run(1)
    assert [s for _, c, s, _ in r.ground_responses[-2:]] == ["OK", "BUSY"]
    assert "the dispatcher holds one arming at a time" in r.ground_responses[-1][3]


def test_telemetry_matches_the_dictionary(rig):
    r = rig()
    r.load_and_start("R00:00:00 modes.NOOP\nR00:00:30 modes.NOOP\n")
    r.run(3)
    dictionary = default_dictionary()
    declared = {n for n, c in dictionary.channels.items() if c.component == "sequencer"}
    assert {f"sequencer.{k}" for k in r.tlm} == declared
    for key, value in r.tlm.items():
        assert dictionary.channel(f"sequencer.{key}").conforms(value) is None, key
    for _, body in r.events:
        assert dictionary.event("sequencer", body["name"]).severity == body["severity"]


def test_reset_counters(rig):
    r = rig()
    r.load_and_start("R00:00:00 modes.NOOP\n")
    r.run(3)
    assert r.tlm["steps_ok"] == 1
    r.send("sequencer.RESET_COUNTERS")
    r.run(2)
    assert r.tlm["steps_ok"] == 0 and r.tlm["cmd_accepted"] == 1 and r.tlm["cmd_rejected"] == 0


# --------------------------------------------------------------------------- no wall clock


def test_the_sequencer_never_reads_the_wall_clock(rig, monkeypatch):
    r = rig()
    r.load_and_start(f"R00:00:00 modes.NOOP\nE+00:00:05 modes.NOOP\n{at(9)} modes.NOOP\n")

    def forbidden(*args, **kwargs):
        raise AssertionError("wall clock read")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns"):
        monkeypatch.setattr(time, name, forbidden)
    r.run(12)
    monkeypatch.undo()
    assert [t for t, _, _ in r.dispatches] == [1, 6, 9]
    # And the source has no way to: no time module, no datetime.now/utcnow/today.
    for module in ("sequencer.py", "sequence_format.py"):
        source = (Path(__file__).resolve().parents[2] / "flight" / module).read_text()
        assert not re.search(r"^\s*(import time|from time )|\.now\(|utcnow\(|\.today\(", source, re.M), module


def test_same_commands_same_dispatch_log(rig):
    logs = []
    for _ in range(2):
        r = rig()
        r.load_and_start("R00:00:00 modes.NOOP\nR00:00:01.5 modes.SET_MODE IDLE\nE+00:00:07 modes.NOOP\n")
        r.run(10)
        logs.append((r.dispatches, [(t, b["name"], b["text"]) for t, b in r.events]))
    assert logs[0] == logs[1]
