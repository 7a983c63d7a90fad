"""The dispatcher in the SIL stack: every validation path of every command, arming, BUSY, timeouts,
and a fuzzed decoder. Cases are generated from the dictionary, so a new command is covered."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight.bus import Bus
from flight.dictionary import default_dictionary
from flight.dispatcher import Dispatcher, DispatcherConfig
from flight.rate_group import TickContext
from sim.scenario import load_scenario
from sim.sil import SilRun

DICTIONARY = default_dictionary()


class Ground:
    """A ground station on the SIL bus: sends on cmd.dispatch, steps the stack, reads the answer."""

    def __init__(self, run: SilRun) -> None:
        self.run = run
        self.pub = run.bus.publisher("test_ground")
        self.responses = run.bus.subscribe(["rsp.dispatch"], name="test-ground-responses")
        self.events = run.bus.subscribe(["evt.dispatcher"], name="test-ground-events")
        run.bus.settle()
        self.next_id = 1000

    def send_raw(self, body: dict) -> None:
        self.pub.publish("cmd.dispatch", body)

    def command(self, name, args=None) -> dict:
        self.next_id += 1
        self.send_raw({"id": self.next_id, "command": name, "args": {} if args is None else args})
        self.run.step()
        answers = [m.body for m in self.responses.drain() if m.body["origin"] == "test_ground"]
        assert len(answers) == 1, answers
        assert answers[0]["id"] == self.next_id
        return answers[0]


@pytest.fixture(scope="module")
def ground(tmp_path_factory):
    run = SilRun(load_scenario("starcloud1"), tmp_path_factory.mktemp("dispatch"), compute="modeled")
    yield Ground(run)
    run.close()


def _bad_values(arg):
    """(value, expected status) pairs that each break one argument."""
    wrong_type = "text" if arg.type in ("int", "float", "bool") else 12345
    cases = [(wrong_type, "FORMAT_ERROR"), (None, "FORMAT_ERROR")]
    if arg.type in ("int", "float"):
        if arg.min is not None and math.isfinite(arg.min) and arg.min > -(2**63):
            cases.append((arg.min - 1, "VALIDATION_ERROR"))
        if arg.max is not None and arg.max < 2**63:
            cases.append((arg.max + 1, "VALIDATION_ERROR"))
    if arg.type == "float":
        cases.append((float("inf"), "VALIDATION_ERROR"))
    if arg.type == "int":
        cases.append((1.5, "FORMAT_ERROR"))
    if arg.type == "enum":
        cases.append(("NOT_A_" + arg.values[0], "VALIDATION_ERROR"))
    if arg.type == "string":
        cases.append(("x" * (arg.max_length + 1), "VALIDATION_ERROR"))
    return cases


def _valid_args(command):
    values = {"int": lambda a: a.default if a.default is not None else max(a.min, 1),
              "float": lambda a: a.min if a.min is not None else 1.0,
              "bool": lambda a: False, "enum": lambda a: a.values[0],
              "string": lambda a: "x" * max(a.min_length, 3)}
    return {a.name: values[a.type](a) for a in command.args}


VALIDATION_CASES = [
    pytest.param(name, arg.name, value, status, id=f"{name}-{arg.name}-{status}-{i}")
    for name, command in sorted(DICTIONARY.commands.items())
    for arg in command.args
    for i, (value, status) in enumerate(_bad_values(arg))
]


@pytest.mark.parametrize("name, arg_name, value, status", VALIDATION_CASES)
def test_each_argument_of_each_command_is_validated(ground, name, arg_name, value, status):
    command = DICTIONARY.command(name)
    args = {**_valid_args(command), arg_name: value}
    answer = ground.command(name, args)
    assert answer["status"] == status
    assert repr(arg_name) in answer["reason"]  # the rejection names the argument
    if status == "VALIDATION_ERROR":
        assert command.arg(arg_name).range_text() in answer["reason"]  # ... and its valid range


@pytest.mark.parametrize("name", sorted(c for c in DICTIONARY.commands if DICTIONARY.commands[c].args))
def test_missing_and_unknown_arguments_are_format_errors(ground, name):
    command = DICTIONARY.command(name)
    required = [a for a in command.args if a.required]
    if required:
        args = _valid_args(command)
        del args[required[0].name]
        answer = ground.command(name, args)
        assert answer["status"] == "FORMAT_ERROR" and f"missing argument {required[0].name!r}" in answer["reason"]
    answer = ground.command(name, {**_valid_args(command), "bogus": 1})
    assert answer["status"] == "FORMAT_ERROR" and "unknown argument 'bogus'" in answer["reason"]


# The ground link exists only in a served stack (tools/stack.py); its NOOP is tested there.
SIL_COMPONENTS_WITHOUT = {"ground_link"}


@pytest.mark.parametrize("name", sorted(n for n, c in DICTIONARY.commands.items()
                                        if c.opcode == "NOOP" and c.component not in SIL_COMPONENTS_WITHOUT))
def test_every_component_answers_noop_through_the_dispatcher(ground, name):
    assert ground.command(name) == {"id": ground.next_id, "origin": "test_ground", "command": name,
                                    "status": "OK", "reason": ""}


def test_reset_counters_zeroes_the_component_counters(ground):
    ground.command("gpu.NOOP")
    assert ground.run.services["gpu"].commands_accepted >= 1
    assert ground.command("gpu.RESET_COUNTERS")["status"] == "OK"
    assert ground.run.services["gpu"].commands_accepted == 1  # the reset itself, counted after it ran


def test_unknown_commands_and_malformed_bodies(ground):
    assert ground.command("gpu.FLY_TO_MOON")["status"] == "INVALID_OPCODE"
    assert ground.command("nosuch.NOOP")["status"] == "INVALID_OPCODE"
    assert ground.command("gpu.SET_POWER_CAP", [1, 2])["status"] == "FORMAT_ERROR"
    ground.send_raw({"id": "seven", "command": "gpu.NOOP"})
    ground.send_raw({"id": 5})
    ground.run.step()
    answers = [m.body for m in ground.responses.drain()]
    assert [a["status"] for a in answers] == ["FORMAT_ERROR", "FORMAT_ERROR"]
    assert answers[0]["id"] is None and "'id' must be an int" in answers[0]["reason"]


def test_guard_refusal_comes_back_as_execution_error(ground):
    answer = ground.command("modes.SET_MODE", {"mode": "IDLE"})
    assert answer["status"] == "OK" and ground.run.modes.mode == "IDLE"
    assert ground.command("modes.SET_MODE", {"mode": "NOMINAL"})["status"] == "OK"


def test_hazardous_command_needs_arming_within_the_window(ground):
    run = ground.run
    answer = ground.command("eps.SET_SWITCH", {"switch": "gpu", "on": False})
    assert answer["status"] == "EXECUTION_ERROR" and "hazardous" in answer["reason"]
    assert "dispatcher.ARM command=eps.SET_SWITCH" in answer["reason"]
    assert ground.command("dispatcher.ARM", {"command": "gpu.NOOP"})["status"] == "VALIDATION_ERROR"
    assert ground.command("dispatcher.ARM", {"command": "eps.SET_SWITCH"})["status"] == "OK"
    assert run.dispatcher.armed == "eps.SET_SWITCH"
    assert ground.command("eps.SET_SWITCH", {"switch": "gpu", "on": False})["status"] == "OK"
    assert run.world.switches["gpu"] is False  # executed by the EPS in the same tick
    # The arming is used up: a second one needs a second ARM.
    assert ground.command("eps.SET_SWITCH", {"switch": "gpu", "on": True})["status"] == "EXECUTION_ERROR"
    # An arming expires after the window (60 s of mission time).
    assert ground.command("dispatcher.ARM", {"command": "eps.SET_SWITCH"})["status"] == "OK"
    for _ in range(61):
        run.step()
    assert run.dispatcher.armed is None
    assert ground.command("eps.SET_SWITCH", {"switch": "gpu", "on": True})["status"] == "EXECUTION_ERROR"
    names = [m.body["name"] for m in ground.events.drain()]
    assert "COMMAND_ARMED" in names and names.count("COMMAND_DISARMED") >= 2


def test_counters_in_telemetry_count_each_status(ground):
    run = ground.run
    before = dict(run.dispatcher.counters)
    ground.command("gpu.NOOP")
    ground.command("gpu.SET_POWER_CAP", {"cap_w": 9999})
    ground.command("gpu.NOPE")
    after = run.dispatcher.counters
    assert after["ok"] - before["ok"] == 1
    assert after["validation_errors"] - before["validation_errors"] == 1
    assert after["invalid_opcodes"] - before["invalid_opcodes"] == 1
    tlm = run.bus.subscribe(["tlm.dispatcher"], name="test-dispatcher-tlm", policy="latest")
    run.bus.settle()
    for _ in range(10):
        run.step()
    tlm.drain()
    body = tlm.latest("tlm.dispatcher").body
    assert body["ok"] == after["ok"] and body["invalid_opcodes"] == after["invalid_opcodes"]


class SilentRig:
    """A dispatcher whose components never answer: for BUSY and timeouts."""

    def __init__(self, config):
        self.t_ns = 0
        self.bus = Bus(lambda: self.t_ns, name="silent")
        self.dispatcher = Dispatcher(self.bus, config=config)
        self.pub = self.bus.publisher("ground")
        self.responses = self.bus.subscribe(["rsp.dispatch"], name="responses")
        self.bus.settle()

    def tick(self):
        ctx = TickContext(tick=self.t_ns // 10**9, t_ns=self.t_ns, period_ns=10**9)
        self.dispatcher.run(ctx)
        self.dispatcher.collect(ctx)
        self.t_ns += 10**9
        return [m.body for m in self.responses.drain()]


def test_busy_when_too_many_in_flight_and_timeout_when_unanswered():
    rig = SilentRig(DispatcherConfig(max_pending=2, response_timeout_s=3))
    for i in range(3):
        rig.pub.publish("cmd.dispatch", {"id": i, "command": "gpu.NOOP"})
    answers = rig.tick()
    assert [(a["id"], a["status"]) for a in answers] == [(2, "BUSY")]
    assert rig.tick() == [] and rig.tick() == []
    answers = rig.tick()
    assert sorted(a["id"] for a in answers) == [0, 1]
    assert {a["status"] for a in answers} == {"EXECUTION_ERROR"} and "no response from gpu within 3 s" in answers[0]["reason"]
    rig.bus.close()


msgpack_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
bodies = st.dictionaries(
    st.sampled_from(["id", "command", "args", "extra"]) | st.text(max_size=5),
    st.none() | st.booleans() | msgpack_ints | st.floats()
    | st.text(max_size=30) | st.sampled_from(sorted(DICTIONARY.commands))
    | st.dictionaries(st.text(max_size=8), msgpack_ints | st.text(max_size=5) | st.floats(), max_size=3)
    | st.lists(msgpack_ints, max_size=3),
    max_size=4,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_fuzzed_bodies_each_get_one_answer_and_the_dispatcher_keeps_working(body):
    rig = SilentRig(DispatcherConfig())
    try:
        rig.pub.publish("cmd.dispatch", body)
        rig.pub.publish("cmd.dispatch", {"id": 77, "command": "dispatcher.NOOP"})
        answers = rig.tick()
        assert answers[-1]["id"] == 77 and answers[-1]["status"] == "OK"
        routed = rig.dispatcher._pending
        assert len(answers) + len(routed) == 2  # the fuzzed one answered now, or routed and pending
    finally:
        rig.bus.close()
