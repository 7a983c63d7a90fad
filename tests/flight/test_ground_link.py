"""The ground link over real sockets: CURVE on tcp 127.0.0.1, roles, anti-replay, malformed input.

A pump thread plays the stack runner: each round it advances the clock one tick, lets a stand-in
for the dispatcher (or the real Dispatcher) answer, then calls ``link.service(tick)``. The test
thread is the ground. Bus, link and stand-in are touched only by the pump while it runs.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from flight.bus import Bus
from flight.clock import SteppedClock, parse_iso_utc
from flight.command_server import CommandServer
from flight.dictionary import default_dictionary
from flight.dispatcher import Dispatcher
from flight.ground_link import (
    ID_MAX,
    SEQ_MAX,
    ClientInfo,
    CommandRequest,
    DecodeFailure,
    GroundLink,
    GroundLinkConfig,
    Hello,
    ReplayGuard,
    ReplayStoreError,
    decode_request,
    dictionary_sha256,
    insecure_sockets,
)
from flight.rate_group import TickContext
from tools.ground_client import GroundClient, LinkError, LinkRefused
from tools.keys import init_keys, load_allowed_clients, load_client_keys, load_public_key, load_server_keys

NS_PER_S = 1_000_000_000
WAIT_S = 5.0  # hang guard only: every wait below ends as soon as its condition holds


def wait_for(predicate, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class FakeDispatcher:
    """Stands in for flight/dispatcher.py: answers each cmd.dispatch on rsp.dispatch per the protocol."""

    def __init__(self, bus: Bus) -> None:
        self._pub = bus.publisher("dispatcher")
        self._tlm = bus.publisher("fake")
        self._inbox = bus.subscribe(["cmd.dispatch"], name="fake-dispatcher")
        self.received: list[dict] = []
        self.mute = False

    def run(self, ctx: TickContext) -> None:
        for message in self._inbox.drain():
            self.received.append(dict(message.body, source=message.source))
            if not self.mute:
                self._pub.publish("rsp.dispatch", {"id": message.body["id"], "origin": message.source,
                                                   "command": message.body["command"], "status": "OK", "reason": ""})
        self._tlm.publish("tlm.fake", {"tick": ctx.tick})


class RealStack:
    """The lead's Dispatcher with an EPS command server behind it."""

    def __init__(self, bus: Bus) -> None:
        self.dispatcher = Dispatcher(bus)
        self.switch_calls: list[dict] = []
        self.eps = CommandServer(bus, "eps", {"SET_SWITCH": self.switch_calls.append})
        self.received: list[dict] = []

    def run(self, ctx: TickContext) -> None:
        self.dispatcher.run(ctx)
        self.eps.execute_commands(ctx)
        self.dispatcher.collect(ctx)


class Env:
    """A running stack with a ground link; clients made here are closed with it."""

    def __init__(self, tmp_path: Path, *, insecure: bool = False, real_dispatcher: bool = False, **config) -> None:
        self.tmp_path = tmp_path
        self.keys = tmp_path / "keys"
        self.insecure = insecure
        if not insecure and not (self.keys / "server.key").exists():
            init_keys(self.keys, operators=("op",), observers=("obs",))
        self.config = GroundLinkConfig(insecure=insecure, replay_store_path=tmp_path / "replay.json",
                                       response_timeout_ticks=5, **config)
        self.real_dispatcher = real_dispatcher
        self.clients: list[GroundClient] = []
        self.context = zmq.Context()
        self.clock = SteppedClock()
        self.bus = Bus(self.clock.now_ns, name="ground-test")
        self._start()

    def _start(self) -> None:
        if self.insecure:
            self.link = GroundLink.open(self.bus, self.context, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                                        clock=self.clock, config=self.config)
        else:
            self.link = GroundLink.open(self.bus, self.context, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*",
                                        clock=self.clock, server_keys=load_server_keys(self.keys),
                                        allowed_clients=load_allowed_clients(self.keys), config=self.config)
        self.stack = RealStack(self.bus) if self.real_dispatcher else FakeDispatcher(self.bus)
        self.events_sub = self.bus.subscribe(["evt.ground_link"], name="test-events")
        self.events: list[dict] = []
        self.bus.settle()
        self.tick = 0
        self._stop = threading.Event()
        self._error: list[BaseException] = []
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return self.link.sockets.command_endpoint

    def _pump(self) -> None:
        try:
            while not self._stop.is_set():
                self.tick += 1
                self.clock.advance(NS_PER_S)
                self.stack.run(TickContext(self.tick, self.clock.now_ns(), NS_PER_S))
                self.link.service(self.tick)
                self.events.extend(m.body for m in self.events_sub.drain())
                time.sleep(0.001)
        except BaseException as exc:  # surfaced by stop()
            self._error.append(exc)

    def stop(self) -> None:
        """Stop the pump (idempotent); re-raises what failed in it."""
        self._stop.set()
        self._thread.join(timeout=10)
        if self._error:
            raise self._error[0]

    def restart(self) -> None:
        """A stack restart: new context, bus and link over the same keys and anti-replay store."""
        self.stop()
        self._close_stack()
        self.context = zmq.Context()
        self.clock = SteppedClock()
        self.bus = Bus(self.clock.now_ns, name="ground-test")
        self._start()

    def client(self, name: str | None = None, *, keys: Path | None = None, timeout_s: float = WAIT_S) -> GroundClient:
        keys = self.keys if keys is None else keys
        if name is None:
            client = GroundClient(self.endpoint, timeout_s=timeout_s)
        else:
            client = GroundClient(self.endpoint, keys / f"{name}.key_secret", keys / "server.key", timeout_s=timeout_s)
        self.clients.append(client)
        return client

    def event_names(self) -> list[str]:
        return [e["name"] for e in list(self.events)]

    def _close_stack(self) -> None:
        self.link.close()
        self.bus.close()
        self.context.term()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        try:
            self.stop()
        finally:
            self._close_stack()


@contextlib.contextmanager
def running(tmp_path: Path, **kwargs):
    env = Env(tmp_path, **kwargs)
    try:
        yield env
    finally:
        env.close()


@pytest.fixture
def env(tmp_path):
    with running(tmp_path) as env:
        yield env


# --------------------------------------------------------------------------- end to end, secure


def test_operator_command_ok_end_to_end(env):
    client = env.client("op")
    assert (client.client_name, client.role) == ("op", "operator")
    assert client.welcome["secure"] is True
    assert client.dictionary_matches()
    parse_iso_utc(client.mission_utc)  # a valid ISO UTC time
    result = client.send_command("modes.SET_MODE", {"mode": "IDLE"})
    assert (result.status, result.command) == ("OK", "modes.SET_MODE")
    sent = [b for b in env.stack.received if b["command"] == "modes.SET_MODE"]
    assert len(sent) == 1
    assert sent[0]["args"] == {"mode": "IDLE"} and sent[0]["source"] == "ground_link"
    env.stop()  # counters are the pump's: read them once it has stopped
    assert "CLIENT_CONNECTED" in env.event_names()
    assert env.link.counters["forwarded"] == 1 and env.link.counters["responses_sent"] == 1


def test_unknown_key_gets_nothing_and_is_counted(env, tmp_path):
    stranger_keys = tmp_path / "stranger"
    init_keys(stranger_keys, operators=("op",), observers=())
    # A stranger's key with the right server key: the handshake is refused, no welcome comes.
    with pytest.raises(LinkError):
        GroundClient(env.endpoint, stranger_keys / "op.key_secret", env.keys / "server.key", timeout_s=2.0)
    wait_for(lambda: env.link.counters["refused_unknown_key"] >= 1, "the refusal to be counted")
    wait_for(lambda: "CLIENT_REFUSED" in env.event_names(), "a CLIENT_REFUSED event")
    # Nor does it get telemetry (the pump publishes tlm.fake every tick).
    keys = load_client_keys(stranger_keys / "op.key_secret")
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    try:
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.CURVE_SERVERKEY, load_public_key(env.keys / "server.key"))
        sub.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
        sub.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(env.link.sockets.telemetry_endpoint)
        assert sub.poll(500) == 0
    finally:
        sub.close(linger=0)
        context.term()
    wait_for(lambda: env.link.counters["refused_unknown_key"] >= 2, "the telemetry refusal too")


def test_wrong_server_key_is_refused(env, tmp_path):
    other = tmp_path / "other"
    init_keys(other, operators=(), observers=())
    with pytest.raises(LinkRefused):
        GroundClient(env.endpoint, env.keys / "op.key_secret", other / "server.key", timeout_s=3.0)
    wait_for(lambda: env.link.counters["refused_handshake"] >= 1, "the failed handshake to be counted")


def test_observer_receives_telemetry_but_may_not_command(env):
    client = env.client("obs")
    assert client.role == "observer"
    client.subscribe(("tlm.",))
    messages = wait_for(lambda: [m for m in client.receive(50) if m.topic == "tlm.fake"], "telemetry")
    assert type(messages[0].body["tick"]) is int and messages[0].source == "fake"
    for command, args in (("modes.SET_MODE", {"mode": "IDLE"}), ("eps.SET_SWITCH", {"switch": "gpu", "on": False}),
                          ("dispatcher.ARM", {"command": "eps.SET_SWITCH"})):
        result = client.send_command(command, args)
        assert result.status == "EXECUTION_ERROR"
        assert result.reason == "client obs has role observer: observers may not command"
    env.stop()
    assert env.stack.received == []
    assert env.link.counters["refused_role"] == 3
    assert env.event_names().count("COMMAND_REFUSED") == 3


def test_replayed_frame_is_refused_also_after_a_restart(env):
    client = env.client("op")
    first = client.send_command("eps.NOOP")
    assert first.ok
    captured = client.last_frame
    seq = msgpack.unpackb(captured)["seq"]
    client.send_raw(captured)
    replayed = client.wait_response(first.id)
    assert replayed.status == "EXECUTION_ERROR"
    assert replayed.reason == f"replayed or out-of-order command: seq {seq} <= last accepted {seq}"
    assert len(env.stack.received) == 1
    assert json.loads((env.tmp_path / "replay.json").read_text())["marks"] == {"op": seq}

    env.restart()
    client = env.client("op")
    assert client.welcome["last_seq"] == seq
    client.send_raw(captured)
    assert client.wait_response(first.id).reason.startswith("replayed or out-of-order command")
    assert client.send_command("eps.NOOP").ok  # a fresh command still goes through
    env.stop()
    assert [b["command"] for b in env.stack.received] == ["eps.NOOP"]  # the fresh one only
    assert env.link.counters["refused_replay"] == 1


def test_unanswered_command_times_out(env):
    env.stack.mute = True
    result = env.client("op").send_command("modes.SET_MODE", {"mode": "IDLE"})
    assert (result.status, result.reason) == ("EXECUTION_ERROR", "no response from the stack within 5 ticks")
    env.stop()
    assert env.link.counters["responses_timed_out"] == 1
    assert "COMMAND_TIMED_OUT" in env.event_names()


def test_busy_when_too_many_commands_wait(tmp_path):
    with running(tmp_path, max_pending=1) as env:
        env.stack.mute = True
        client = env.client("op")
        first = client.send_command_async("eps.NOOP")
        second = client.send_command_async("eps.NOOP")
        assert client.wait_response(second).status == "BUSY"
        assert client.wait_response(first).status == "EXECUTION_ERROR"  # timed out, never BUSY
        env.stop()
        assert env.link.counters["refused_busy"] == 1


def test_malformed_requests_are_answered_and_the_link_keeps_serving(env):
    client = env.client("op")
    client.send_raw(b"\xc1")  # never valid msgpack
    client.send_raw(msgpack.packb({"type": "command", "id": 7, "seq": "x", "command": "eps.NOOP"}))
    result = client.wait_response(7)
    assert result.status == "FORMAT_ERROR" and "'seq'" in result.reason
    wait_for(lambda: list(client.errors), "the error reply")
    assert "not valid msgpack" in client.errors[0]
    assert client.send_command("eps.NOOP").ok
    env.stop()
    assert env.link.counters["malformed"] == 2


# --------------------------------------------------------------------------- the real dispatcher


def test_through_the_real_dispatcher(tmp_path):
    with running(tmp_path, real_dispatcher=True) as env:
        client = env.client("op")
        assert client.send_command("eps.NOOP").ok  # dispatcher -> cmd.eps -> rsp.eps -> rsp.dispatch
        unarmed = client.send_command("eps.SET_SWITCH", {"switch": "gpu", "on": False})
        assert unarmed.status == "EXECUTION_ERROR" and "hazardous" in unarmed.reason
        assert client.send_command("dispatcher.ARM", {"command": "eps.SET_SWITCH"}).ok
        assert client.send_command("eps.SET_SWITCH", {"switch": "gpu", "on": False}).ok
        assert client.send_command("modes.SET_MODE", {"mode": "BOGUS"}).status == "VALIDATION_ERROR"
        assert client.send_command("nope.NOOP").status == "INVALID_OPCODE"
        obs = env.client("obs")
        assert obs.send_command("dispatcher.ARM", {"command": "eps.SET_SWITCH"}).status == "EXECUTION_ERROR"
        # The link answers its own NOOP and RESET_COUNTERS through the dispatcher, like any component.
        assert client.send_command("ground_link.NOOP").ok
        assert env.link.counters["refused_role"] == 1
        assert client.send_command("ground_link.RESET_COUNTERS").ok
        env.stop()
        assert env.stack.switch_calls == [{"switch": "gpu", "on": False}]
        assert env.stack.dispatcher.counters["ok"] == 5
        assert env.link.counters["refused_role"] == 0 and env.link.commands.accepted == 1



# --------------------------------------------------------------------------- insecure bench mode


def test_insecure_link_everyone_is_the_local_operator(tmp_path):
    with running(tmp_path, insecure=True) as env:
        client = env.client()
        assert (client.client_name, client.role, client.welcome["secure"]) == ("local", "operator", False)
        assert client.send_command("eps.NOOP").ok
        env.stop()
        assert env.link.counters["forwarded"] == 1
        # Its telemetry matches its dictionary declaration, channel by channel.
        housekeeping = env.bus.subscribe(["tlm.ground_link"], name="hk")
        env.link.publish_telemetry()
        (message,) = housekeeping.drain()
        dictionary = default_dictionary()
        for key, value in message.body.items():
            channel = dictionary.channel(f"ground_link.{key}")
            assert channel is not None and channel.conforms(value) is None, key
        assert message.body["secure"] is False and message.body["forwarded"] == 1


def test_insecure_link_says_so(tmp_path):
    context = zmq.Context()
    clock = SteppedClock()
    bus = Bus(clock.now_ns)
    events = bus.subscribe(["evt.ground_link"])
    link = GroundLink.open(bus, context, f"ipc://{tmp_path}/cmd", f"ipc://{tmp_path}/tlm", clock=clock,
                           config=GroundLinkConfig(insecure=True))
    try:
        assert [m.body["name"] for m in events.drain()] == ["INSECURE_LINK"]
        assert link.telemetry_endpoint == f"ipc://{tmp_path}/tlm"
    finally:
        link.close()
        bus.close()
        context.term()


def test_insecurity_is_never_a_default(tmp_path):
    context = zmq.Context()
    bus = Bus(SteppedClock().now_ns)
    sockets = insecure_sockets(context, "tcp://127.0.0.1:*", "tcp://127.0.0.1:*")
    try:
        with pytest.raises(ValueError, match="insecure=True"):
            GroundLink(bus, sockets.command, sockets.telemetry, None, GroundLinkConfig(), clock=SteppedClock())
        with pytest.raises(ValueError, match="not a CURVE server"):
            GroundLink(bus, sockets.command, sockets.telemetry, {b"x" * 40: ClientInfo("op", "operator")},
                       GroundLinkConfig(), clock=SteppedClock())
    finally:
        sockets.close()
        bus.close()
        context.term()


# --------------------------------------------------------------------------- anti-replay store


def test_replay_guard_persists_atomically_and_refuses_corruption(tmp_path):
    path = tmp_path / "replay.json"
    guard = ReplayGuard(path)
    assert guard.check("op", 1) is None
    guard.accept("op", 10)
    assert guard.check("op", 10) == "replayed or out-of-order command: seq 10 <= last accepted 10"
    assert guard.check("op", 9) is not None and guard.check("op", 11) is None
    guard.persist()
    assert ReplayGuard(path).last("op") == 10
    assert not list(tmp_path.glob(".*.tmp"))
    document = json.loads(path.read_text())
    document["marks"]["op"] = 3  # a bit flip that would re-open old seqs
    path.write_text(json.dumps(document))
    with pytest.raises(ReplayStoreError, match="checksum"):
        ReplayGuard(path)
    path.write_text("{not json")
    with pytest.raises(ReplayStoreError, match=str(path)):
        ReplayGuard(path)


# --------------------------------------------------------------------------- the decoder, fuzzed


def reference_valid(body: dict) -> bool:
    """Independent statement of a valid command request (the protocol section of the module)."""
    if set(body) - {"type", "id", "seq", "command", "args"}:
        return False
    i, s, c, a = body.get("id"), body.get("seq"), body.get("command"), body.get("args", {})
    ok_int = lambda v, lo: type(v) is int and lo <= v < 2**63  # noqa: E731
    if not (ok_int(i, 0) and ok_int(s, 1) and type(c) is str and len(c) <= 128):
        return False
    component, dot, opcode = c.partition(".")
    if not (dot and component[:1].islower() and opcode[:1].isupper() and component.replace("_", "").isalnum()
            and component == component.lower() and opcode == opcode.upper() and opcode.replace("_", "").isalnum()
            and component.isascii() and opcode.isascii()):
        return False
    a = {} if a is None else a
    return type(a) is dict and len(a) <= 32 and all(
        type(k) is str and 0 < len(k) <= 64 and type(v) in (bool, int, float, str) and (type(v) is not str or len(v) <= 4096)
        for k, v in a.items())


def check_outcome(outcome) -> None:
    assert isinstance(outcome, (Hello, CommandRequest, DecodeFailure))
    if isinstance(outcome, DecodeFailure):
        assert isinstance(outcome.reason, str) and outcome.reason
        assert outcome.id is None or (type(outcome.id) is int and 0 <= outcome.id <= ID_MAX)
    if isinstance(outcome, CommandRequest):
        assert 0 <= outcome.id <= ID_MAX and 1 <= outcome.seq <= SEQ_MAX
        assert all(type(v) in (bool, int, float, str) for v in outcome.args.values())


huge_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
scalars = st.none() | st.booleans() | huge_ints | st.floats() | st.text(max_size=20) | st.binary(max_size=20)
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8) | huge_ints, inner, max_size=4), max_leaves=20)
commands = st.sampled_from(["eps.NOOP", "eps.SET_SWITCH", "modes.SET_MODE", "Eps.SET", "eps.set", "x" * 200,
                            "a.B", ".X", "", "eps.SET SWITCH", "eps.SET_SWITCH\x00"])
good_args = st.dictionaries(st.text(min_size=1, max_size=10),
                            st.booleans() | huge_ints | st.floats() | st.text(max_size=30), max_size=4)
# Mostly well-formed fields with a chance of junk in each, so both outcomes are explored.
fields = {
    "id": st.integers(0, 2**63 - 1) | huge_ints | junk,
    "seq": st.integers(1, 2**63 - 1) | huge_ints | junk,
    "command": commands | commands | junk,
    "args": good_args | good_args | st.none() | st.dictionaries(st.text(max_size=70), junk, max_size=40) | junk,
}
command_bodies = st.one_of(
    st.fixed_dictionaries({"type": st.just("command"), **{k: fields[k] for k in ("id", "seq", "command")}},
                          optional={"args": fields["args"]}),
    st.fixed_dictionaries({"type": st.just("command")}, optional={**fields, "extra": junk}),
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_never_raises_on_bytes(payload):
    check_outcome(decode_request(payload))


@settings(max_examples=300, deadline=None)
@given(junk)
def test_decoder_never_raises_on_msgpack_objects(obj):
    check_outcome(decode_request(msgpack.packb(obj, use_bin_type=True)))


@settings(max_examples=500, deadline=None)
@given(command_bodies)
def test_decoder_accepts_exactly_the_valid_commands(body):
    outcome = decode_request(msgpack.packb(body, use_bin_type=True))
    check_outcome(outcome)
    assert isinstance(outcome, CommandRequest) == reference_valid(body)
    if isinstance(outcome, DecodeFailure) and type(body.get("id")) is int and 0 <= body["id"] < 2**63:
        assert outcome.id == body["id"]  # a readable id gets a FORMAT_ERROR response, not a bare error


def test_decoder_rejects_oversize_and_odd_inputs():
    assert "larger than" in decode_request(b"\x90" * (64 * 1024 + 1)).reason
    assert "must be bytes" in decode_request("text").reason
    assert "extension" in decode_request(msgpack.packb(msgpack.ExtType(5, b"x"))).reason
    assert "not valid msgpack" in decode_request(msgpack.packb({"type": "hello"}) + b"\x00").reason  # trailing data
    assert decode_request(msgpack.packb({"type": "hello"})) == Hello()
    nested = b"\x91" * 5000 + b"\xc0"  # deeper than msgpack's stack
    assert isinstance(decode_request(nested), DecodeFailure)


def test_fuzzed_frames_over_the_socket_each_get_one_clean_reply(tmp_path):
    with running(tmp_path, insecure=True) as env:
        context = zmq.Context()
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(env.endpoint)
        try:
            @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
            @given(st.binary(max_size=200) | junk.map(msgpack.packb) | command_bodies.map(msgpack.packb))
            def check(frame):
                assume(not isinstance(decode_request(frame), CommandRequest))
                dealer.send(frame)
                assert dealer.poll(int(WAIT_S * 1000)), "no reply"
                reply = msgpack.unpackb(dealer.recv())
                assert reply["type"] in ("error", "response", "welcome")
                if reply["type"] == "response":
                    assert reply["status"] == "FORMAT_ERROR"

            check()
            dealer.send_multipart([b"two", b"frames"])
            assert dealer.poll(int(WAIT_S * 1000))
            assert msgpack.unpackb(dealer.recv())["reason"] == "a request is one frame, got 2"
            client = env.client()
            assert client.send_command("eps.NOOP").ok
        finally:
            dealer.close(linger=0)
            context.term()


def test_dictionary_declares_the_link():
    dictionary = default_dictionary()
    assert dictionary.components["ground_link"].commandable  # NOOP and RESET_COUNTERS, as every component
    assert {"CLIENT_REFUSED", "COMMAND_REFUSED", "CLIENT_CONNECTED"} <= {
        e.name for e in dictionary.events.values() if e.component == "ground_link"}
    assert len(dictionary_sha256(dictionary)) == 64
