"""The test API (tools/testing.py): predicates, awaits, counts and histories against a fake client.

The fake keeps a virtual clock that StackApi reads, so timeouts are exercised without waiting.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flight.bus import Message
from flight.dictionary import default_dictionary
from tools.ground_client import CommandResult, LinkTimeout
from tools.testing import (
    StackApi,
    UnknownNameError,
    all_of,
    any_of,
    close_to,
    equal_to,
    greater_than,
    greater_than_or_equal_to,
    invert,
    is_one_of,
    less_than,
    less_than_or_equal_to,
    not_equal_to,
    within,
)

D = default_dictionary()
finite = st.floats(allow_nan=False, allow_infinity=False)


class FakeClient:
    def __init__(self, statuses=None):
        self.statuses = statuses or {}
        self.sent = []
        self.scheduled = []  # (virtual time s, Message), in arrival order
        self.now = 0.0
        self.subscribed = None
        self.receive_calls = 0

    def clock(self):
        return self.now

    def send_command(self, command, args=None, timeout_s=None):
        self.sent.append((command, args, timeout_s))
        status, reason = self.statuses.get(command, ("OK", ""))
        if status == "TIMEOUT":
            raise LinkTimeout(f"no response to {command}")
        return CommandResult(len(self.sent), command, status, reason)

    def subscribe(self, prefixes=("tlm.", "evt.")):
        self.subscribed = tuple(prefixes)

    def at(self, t_s, topic, body, t_ns=None):
        t_ns = int(t_s * 1e9) if t_ns is None else t_ns
        self.scheduled.append((t_s, Message(topic, len(self.scheduled), t_ns, topic[4:], body)))

    def event(self, t_s, component, name, text="", **fields):
        severity = D.events[f"{component}.{name}"].severity
        self.at(t_s, f"evt.{component}", {"severity": severity, "name": name, "text": text, **fields})

    def receive(self, timeout_ms=0):
        self.receive_calls += 1
        due = [m for t, m in self.scheduled if t <= self.now]
        if not due and timeout_ms > 0:
            upcoming = [t for t, _ in self.scheduled if t > self.now]
            step = timeout_ms / 1000
            self.now = min(upcoming) if upcoming and min(upcoming) - self.now <= step else self.now + step
            due = [m for t, m in self.scheduled if t <= self.now]
        self.scheduled = [(t, m) for t, m in self.scheduled if t > self.now]
        return due


@pytest.fixture
def fake():
    return FakeClient()


@pytest.fixture
def api(fake):
    return StackApi(fake, D, default_timeout_s=5.0, clock=fake.clock)


# --------------------------------------------------------------------------------- predicates


@given(finite, finite)
def test_comparisons_agree_with_python(limit, value):
    assert greater_than(limit)(value) == (value > limit)
    assert greater_than_or_equal_to(limit)(value) == (value >= limit)
    assert less_than(limit)(value) == (value < limit)
    assert less_than_or_equal_to(limit)(value) == (value <= limit)
    assert equal_to(limit)(value) == (value == limit)
    assert not_equal_to(limit)(value) == (value != limit)


@given(finite, finite, finite)
def test_within_and_composition(a, b, value):
    lo, hi = min(a, b), max(a, b)
    assert within(lo, hi)(value) == (lo <= value <= hi)
    assert all_of(greater_than_or_equal_to(lo), less_than_or_equal_to(hi))(value) == within(lo, hi)(value)
    assert (greater_than(hi) | less_than(lo))(value) == (not within(lo, hi)(value))
    assert (~within(lo, hi))(value) == invert(within(lo, hi))(value) == (not within(lo, hi)(value))
    assert any_of(equal_to(a), equal_to(b))(value) == (value in (a, b))


def test_predicates_on_values_they_cannot_compare_are_false_not_errors():
    for p in (greater_than(0), less_than(1), within(0, 1), close_to(0.5, 0.1)):
        assert not p(None) and not p("IDLE") and not p(True)
    assert not equal_to(1)(True) and not equal_to(True)(1) and equal_to(True)(True)
    assert is_one_of(["IDLE", "SAFE"])("SAFE") and not is_one_of(["IDLE", "SAFE"])("NOMINAL")
    assert close_to(1.0, 0.01)(1.005) and not close_to(1.0, 0.01)(1.02)
    assert any_of(lambda v: v == 3)(3)  # plain callables compose too
    with pytest.raises(ValueError):
        within(2, 1)


def test_predicates_describe_themselves():
    assert str(within(0.3, 0.9) & ~equal_to(0.5)) == "all_of(within(0.3, 0.9), invert(equal_to(0.5)))"


# --------------------------------------------------------------------------------- commands


def test_send_and_assert_command(fake, api):
    fake.statuses["eps.SET_SWITCH"] = ("EXECUTION_ERROR", "eps.SET_SWITCH is hazardous: arm first")
    assert api.send_and_assert_command("modes.SET_MODE", {"mode": "IDLE"}).status == "OK"
    with pytest.raises(AssertionError, match="ended EXECUTION_ERROR \\(expected OK\\): eps.SET_SWITCH is hazardous"):
        api.send_and_assert_command("eps.SET_SWITCH", {"switch": "gpu", "on": False})
    api.send_and_assert_command("eps.SET_SWITCH", {"switch": "gpu", "on": False}, status="EXECUTION_ERROR")
    with pytest.raises(AssertionError, match="ended OK \\(expected VALIDATION_ERROR\\)"):
        api.send_and_assert_command("modes.NOOP", status="VALIDATION_ERROR")
    with pytest.raises(ValueError, match="status must be one of"):
        api.send_and_assert_command("modes.NOOP", status="FINE")
    api.arm("eps.SET_SWITCH")
    assert fake.sent[-1] == ("dispatcher.ARM", {"command": "eps.SET_SWITCH"}, None)
    assert fake.subscribed == ("tlm.", "evt.")


def test_link_timeout_propagates(fake, api):
    fake.statuses["modes.NOOP"] = ("TIMEOUT", "")
    with pytest.raises(LinkTimeout):
        api.send_and_assert_command("modes.NOOP")


# --------------------------------------------------------------------------------- telemetry


def test_await_telemetry_returns_the_first_value_satisfying_the_predicate(fake, api):
    for i, soc in enumerate((0.5, 0.6, 0.7, 0.8)):
        fake.at(i + 1, "tlm.eps", {"battery_soc": soc, "bus_load_w": 80.0})
    assert api.await_telemetry("eps.battery_soc", greater_than(0.65)) == 0.7
    assert api.await_telemetry("eps.battery_soc") == 0.5  # no predicate: the first sample since the clear
    assert api.await_telemetry("eps.battery_soc", greater_than(0.75), start="now") == 0.8
    assert [s.value for s in api.telemetry_history("eps.battery_soc")] == [0.5, 0.6, 0.7, 0.8]


def test_await_telemetry_times_out_naming_channel_predicate_and_last_value(fake, api):
    fake.at(1, "tlm.eps", {"battery_soc": 0.5})
    fake.at(2, "tlm.eps", {"battery_soc": 0.55})
    with pytest.raises(AssertionError) as info:
        api.await_telemetry("eps.battery_soc", greater_than(0.9), timeout_s=3)
    text = str(info.value)
    assert "eps.battery_soc" in text and "greater_than(0.9)" in text and "2 samples" in text and "0.55" in text
    assert fake.now >= 3  # it waited (virtual) time up to its timeout, not less


def test_unknown_channel_is_an_immediate_error_not_a_timeout(fake, api):
    with pytest.raises(UnknownNameError, match="eps.battery_soc"):
        api.await_telemetry("eps.batery_soc", greater_than(0.5), timeout_s=100)
    with pytest.raises(UnknownNameError):
        api.await_telemetry_count("gpu.nothing", 3)
    assert fake.receive_calls == 0 and fake.now == 0


def test_pattern_channels_resolve(fake, api):
    fake.at(1, "tlm.scheduler", {"fast_cycles": 10})
    assert api.await_telemetry("scheduler.fast_cycles", equal_to(10)) == 10


def test_await_telemetry_with_a_message_predicate(fake, api):
    fake.at(1, "tlm.gpu", {"state": "idle", "power_w": 90.0})
    fake.at(2, "tlm.gpu", {"state": "busy", "power_w": 650.0})
    message = api.await_telemetry(lambda m: m.topic == "tlm.gpu" and m.body["power_w"] > 500)
    assert message.body["state"] == "busy" and message.t_ns == 2 * 10**9


def test_await_telemetry_count(fake, api):
    for i in range(5):
        fake.at(i + 1, "tlm.modes", {"mode": "IDLE" if i % 2 else "NOMINAL"})
    assert api.await_telemetry_count("modes.mode", 2) == ["NOMINAL", "IDLE"]
    assert api.await_telemetry_count("modes.mode", 2, predicate=equal_to("IDLE")) == ["IDLE", "IDLE"]
    assert api.await_telemetry_count("modes.mode", greater_than(4)) == ["NOMINAL", "IDLE"] * 2 + ["NOMINAL"]
    assert api.await_telemetry_count("modes.mode", 0, timeout_s=0) == []
    with pytest.raises(AssertionError, match="5 samples"):
        api.await_telemetry_count("modes.mode", 6, timeout_s=2)


def test_clear_histories_forgets_what_came_before_even_if_it_straggles_in(fake, api):
    fake.at(1, "tlm.modes", {"mode": "NOMINAL"})
    fake.now = 1
    api.clear_histories()
    fake.at(1.5, "tlm.modes", {"mode": "SAFE"}, t_ns=10**9 // 2)  # sent before the clear, arrives after: dropped
    fake.at(2, "tlm.modes", {"mode": "IDLE"})
    assert api.await_telemetry("modes.mode") == "IDLE"
    assert [s.value for s in api.telemetry_history("modes.mode")] == ["IDLE"]


def test_settle_waits_for_the_first_telemetry(fake, api):
    with pytest.raises(AssertionError, match="no telemetry"):
        api.settle(timeout_s=1)
    fake.at(2, "tlm.bus", {"messages_sent": 1})
    api.settle(timeout_s=5)


# --------------------------------------------------------------------------------- events


def test_await_event_by_full_or_bare_name(fake, api):
    fake.event(1, "dispatcher", "COMMAND_DISPATCHED", "modes.SET_MODE", command="modes.SET_MODE")
    fake.event(2, "modes", "MODE_CHANGED", "NOMINAL -> IDLE", mode="IDLE")
    event = api.await_event("MODE_CHANGED")
    assert (event.name, event.severity, event.fields["mode"], event.component) == \
        ("modes.MODE_CHANGED", "ACTIVITY_HI", "IDLE", "modes")
    assert api.await_event("modes.MODE_CHANGED", predicate=lambda e: e.fields["mode"] == "IDLE") == event
    with pytest.raises(AssertionError, match="events seen: dispatcher.COMMAND_DISPATCHED, modes.MODE_CHANGED"):
        api.await_event("SAFE_MODE_ENTERED", timeout_s=1)
    with pytest.raises(UnknownNameError, match="MODE_CHANGED"):
        api.await_event("MODE_CHANGD")


def test_assert_event_count(fake, api):
    fake.event(1, "dispatcher", "COMMAND_COMPLETED", "a")
    fake.event(2, "dispatcher", "COMMAND_COMPLETED", "b")
    fake.event(3, "modes", "MODE_CHANGED", "x")
    # Waits for events still in flight up to the timeout...
    assert len(api.assert_event_count("COMMAND_COMPLETED", 2, timeout_s=5)) == 2
    assert len(api.assert_event_count("modes.MODE_CHANGED", greater_than(0), timeout_s=5)) == 1
    assert api.assert_event_count("SAFE_MODE_ENTERED", 0) == []
    assert len(api.assert_event_count("COMMAND_COMPLETED", 1, predicate=lambda e: e.text == "b")) == 1
    # ...but an exact count already exceeded fails at once.
    before = fake.now
    with pytest.raises(AssertionError, match="2 events, wanted equal_to\\(1\\)"):
        api.assert_event_count("COMMAND_COMPLETED", 1, timeout_s=100)
    assert fake.now == before
    with pytest.raises(AssertionError, match="within 2 s"):
        api.assert_event_count("MODE_CHANGED", 2, timeout_s=2)
    with pytest.raises(UnknownNameError):
        api.assert_event_count("NO_SUCH_EVENT", 0)
    with pytest.raises(TypeError):
        api.assert_event_count("MODE_CHANGED", True)


def test_events_history_and_clear(fake, api):
    fake.event(1, "modes", "MODE_CHANGED", "x")
    fake.now = 2
    assert [e.name for e in api.events()] == ["modes.MODE_CHANGED"]
    api.clear_histories()
    assert api.events() == [] and api.events("MODE_CHANGED") == []
