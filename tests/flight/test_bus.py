"""Bus: ordering, filtering, drop and reject accounting, settle, tcp, and a decoder fuzz."""

from __future__ import annotations

import time

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight.bus import (
    PROBE_TOPIC,
    Bus,
    BusDecodeError,
    Message,
    connect_subscription,
    decode_message,
    encode_message,
)
from flight.clock import SteppedClock


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def bus(clock):
    with Bus(clock.now_ns, name="test") as bus:
        yield bus


def test_round_trip_in_publication_order(bus, clock):
    eps = bus.publisher("eps")
    thermal = bus.publisher("thermal")
    everything = bus.subscribe([""], name="all")
    bus.settle()
    expected = []  # (topic, seq, t_ns, source, body), built independently of the bus
    seqs: dict[tuple[str, str], int] = {}
    plan = [("tlm.eps", eps), ("tlm.thermal", thermal), ("tlm.eps", thermal), ("evt.power", eps)]
    for i in range(300):
        topic, publisher = plan[i % len(plan)]
        body = {"i": i, "power_w": 100.0 + i / 8, "tag": f"m{i}", "cells": [1, 2, i]}
        seq = seqs.get((publisher.source, topic), 0)
        assert publisher.publish(topic, body) == seq
        seqs[(publisher.source, topic)] = seq + 1
        expected.append((topic, seq, clock.now_ns(), publisher.source, body))
        clock.advance(1_000_000)
    got = everything.drain()
    assert [(m.topic, m.seq, m.t_ns, m.source, m.body) for m in got] == expected
    assert everything.received == 300 and everything.dropped_total == 0 and everything.malformed == 0
    assert eps.messages_sent + thermal.messages_sent == bus.messages_sent == 300


def test_exact_and_prefix_filters(bus):
    pub = bus.publisher("eps")
    exact = bus.subscribe(["tlm.eps"], name="exact")
    prefix = bus.subscribe(["tlm."], name="prefix")
    mixed = bus.subscribe(["evt.", "tlm.eps2"], name="mixed")
    bus.settle()
    for topic in ["tlm.eps", "tlm.eps2", "tlm.epsilon", "tlm", "evt.fdir", "cmd.x", "tlm.eps.sub"]:
        pub.publish(topic, {})
    assert [m.topic for m in exact.drain()] == ["tlm.eps"]
    assert [m.topic for m in prefix.drain()] == ["tlm.eps", "tlm.eps2", "tlm.epsilon", "tlm.eps.sub"]
    assert [m.topic for m in mixed.drain()] == ["tlm.eps2", "evt.fdir"]


def test_same_source_gets_same_publisher_and_counters(bus):
    a = bus.publisher("gpu")
    assert bus.publisher("gpu") is a
    assert [a.publish("tlm.gpu", {}) for _ in range(3)] == [0, 1, 2]
    assert a.publish("tlm.other", {}) == 0  # seq counts per (source, topic)


def test_publish_rejects_bad_input(bus):
    pub = bus.publisher("eps")
    with pytest.raises(ValueError, match="reserved"):
        pub.publish(PROBE_TOPIC, {})
    with pytest.raises(ValueError, match="prefix"):
        pub.publish("tlm.", {})
    with pytest.raises(TypeError, match="dict"):
        pub.publish("tlm.eps", [1, 2])
    with pytest.raises(TypeError, match="non-str key"):
        pub.publish("tlm.eps", {1: 2})
    with pytest.raises(TypeError, match="msgpack"):
        pub.publish("tlm.eps", {"x": object()})
    assert pub.messages_sent == 0
    assert pub.publish("tlm.eps", {"ok": True}) == 0  # failures used no sequence numbers



@pytest.mark.parametrize("reading", [-1, 1.5, True, None])
def test_publish_rejects_a_bad_time_source_reading(reading):
    # Only a SteppedClock's own readings skip the check; a look-alike method or a lambda does not.
    class LookAlike(SteppedClock):
        def now_ns(self) -> int:
            return reading

    for time_source in (lambda: reading, LookAlike().now_ns):
        with Bus(time_source, name="bad-time") as bus:
            pub = bus.publisher("eps")
            with pytest.raises(ValueError, match="time source returned"):
                pub.publish("tlm.eps", {"x": 1})
            assert pub.messages_sent == 0

def test_burst_over_hwm_is_counted_not_lost(bus):
    pub = bus.publisher("gpu")
    sub = bus.subscribe(["tlm.gpu"], hwm=100, name="small")
    other = bus.subscribe(["tlm.gpu"], hwm=10_000, name="big")
    bus.settle()
    burst = 5_000
    for i in range(burst):
        pub.publish("tlm.gpu", {"i": i})
    first = sub.drain()
    assert 0 < len(first) < burst
    assert sub.dropped["tlm.gpu"] == 0  # the gap is only visible once a later message arrives
    pub.publish("tlm.gpu", {"i": burst})
    rest = sub.drain()
    total = burst + 1
    assert sub.dropped["tlm.gpu"] > 0
    assert sub.received + sub.dropped["tlm.gpu"] == total
    assert len(first) + len(rest) == sub.received
    assert [m.seq for m in first] == list(range(len(first)))  # what arrived is in order
    assert rest[-1].seq == burst
    # The other subscription has room: the hwm belongs to each subscription.
    assert len(other.drain()) + other.dropped_total == total
    assert bus.stats()["small"]["dropped"] == {"tlm.gpu": sub.dropped["tlm.gpu"]}


def test_hwm_is_the_room_a_subscription_always_has(bus):
    # The inproc endpoint adds the bus's send mark to the subscription's; the bus keeps that at 1.
    pub = bus.publisher("gpu")
    sub = bus.subscribe(["tlm.gpu"], hwm=50)
    bus.settle()
    for i in range(1_000):
        pub.publish("tlm.gpu", {"i": i})
    first = len(sub.drain())
    assert 50 <= first <= 101
    pub.publish("tlm.gpu", {"i": -1})  # the burst's losses show as a gap before this one
    assert len(sub.drain()) == 1 and sub.dropped_total == 1_000 - first
    # After any drain, partial or whole, hwm more frames always fit: none of these is dropped.
    for burst in (50, 17, 50, 3, 50):
        before = sub.dropped_total
        for i in range(burst):
            pub.publish("tlm.gpu", {"i": i})
        assert len(sub.drain(max_messages=burst)) == burst
        assert sub.dropped_total == before


def _overflow_pattern(clock: SteppedClock, pause_s: float) -> list[list[int]]:
    """Seqs received per round of an overflow scenario, sleeping ``pause_s`` between steps."""
    with Bus(clock.now_ns, name="pattern") as bus:
        pub = bus.publisher("p")
        pattern = []
        subs = []
        for round_index in range(6):
            subs.append(bus.subscribe(["a"], hwm=8, name=f"s{round_index}"))
            pub.publish("a", {})  # straight after subscribe, without settle
            for _ in range(20 + round_index):
                pub.publish("a", {})
            time.sleep(pause_s)
            for sub in subs:
                pattern.append([m.seq for m in sub.drain()])
            time.sleep(pause_s)
            pub.publish("a", {})
        pattern.extend([m.seq for m in sub.drain()] for sub in subs)
        pattern.append([s.dropped_total for s in subs])
        return pattern


def test_delivery_does_not_depend_on_timing():
    # ZeroMQ throttles command processing by CPU time; the bus must hide that so SIL runs repeat.
    back_to_back = _overflow_pattern(SteppedClock(), pause_s=0.0)
    paused = _overflow_pattern(SteppedClock(), pause_s=0.003)
    assert back_to_back == paused
    assert back_to_back[0][0] == 0  # the first message after subscribe was delivered


def test_first_message_of_a_stream_can_be_counted_dropped(bus):
    # Topic b's first message is lost behind a full queue of topic a; seq 1 reveals it.
    pub = bus.publisher("p")
    sub = bus.subscribe(["a", "b"], hwm=10)
    bus.settle()
    for _ in range(200):
        pub.publish("a", {})
    pub.publish("b", {})
    sub.drain()
    pub.publish("b", {})
    sub.drain()
    assert sub.dropped["b"] == 1


def test_late_local_subscriber_counts_from_subscribe_time(bus):
    pub = bus.publisher("p")
    for _ in range(5):
        pub.publish("a", {})
    sub = bus.subscribe(["a"])
    bus.settle()
    pub.publish("a", {})
    assert [m.seq for m in sub.drain()] == [5]
    assert sub.dropped_total == 0


def test_latest_policy(bus):
    pub = bus.publisher("eps")
    sub = bus.subscribe(["tlm."], policy="latest", name="latest")
    bus.settle()
    for i in range(10):
        pub.publish("tlm.eps", {"i": i})
        pub.publish("tlm.soc", {"i": i})
    pub.publish("tlm.eps", {"i": 10})
    got = sub.drain()
    # Newest per topic, in arrival order of those newest messages.
    assert [(m.topic, m.body["i"]) for m in got] == [("tlm.soc", 9), ("tlm.eps", 10)]
    assert sub.superseded == 19 and sub.dropped_total == 0 and sub.received == 21
    assert sub.latest("tlm.eps").body == {"i": 10}
    assert sub.latest("tlm.none") is None
    assert sub.drain() == []


def test_latest_seen_with_queue_policy(bus):
    pub = bus.publisher("eps")
    sub = bus.subscribe(["tlm.eps"])
    bus.settle()
    assert sub.latest("tlm.eps") is None
    pub.publish("tlm.eps", {"v": 1})
    pub.publish("tlm.eps", {"v": 2})
    assert len(sub.drain()) == 2
    assert sub.latest("tlm.eps").body == {"v": 2}


def test_drain_max_messages_and_raw(bus, clock):
    pub = bus.publisher("eps")
    sub = bus.subscribe(["tlm.eps"])
    bus.settle()
    for i in range(5):
        pub.publish("tlm.eps", {"i": i})
    head = sub.drain_with_raw(max_messages=2)
    assert [m.body["i"] for m, _ in head] == [0, 1]
    for message, raw in head:
        assert raw == encode_message("tlm.eps", message.seq, clock.now_ns(), "eps", message.body)
        assert message.raw == raw
        assert decode_message(raw) == message
    assert [m.body["i"] for m in sub.drain()] == [2, 3, 4]


def test_malformed_frames_rejected_counted_and_drain_continues(bus):
    pub = bus.publisher("eps")
    sub = bus.subscribe([""], name="all")
    injector = bus.context.socket(zmq.PUB)
    injector.bind("inproc://injector")
    sub.connect("inproc://injector")
    bus.settle()
    # Settle the injector's link by hand: send valid frames until one arrives.
    probe = encode_message("tlm.probe", 0, 0, "injector", {})
    while not sub.drain():
        injector.send(probe)
    bad_frames = {
        b"no separator at all": "no NUL separator",
        b"\x00" + msgpack.packb([0, 0, "s", {}]): "empty topic",
        b"\xff\xfe\x00" + msgpack.packb([0, 0, "s", {}]): "UTF-8",
        b"tlm.x\x00\xc1": "not valid msgpack",
        b"tlm.x\x00" + msgpack.packb([0, 0, "s", {}]) + b"extra": "not valid msgpack",
        b"tlm.x\x00" + msgpack.packb({"seq": 1}): "payload must be [seq, t_ns, source, body]",
        b"tlm.x\x00" + msgpack.packb([0, 0, "s"]): "payload must be [seq, t_ns, source, body]",
        b"tlm.x\x00" + msgpack.packb([-1, 0, "s", {}]): "seq",
        b"tlm.x\x00" + msgpack.packb([True, 0, "s", {}]): "seq",
        b"tlm.x\x00" + msgpack.packb([0, 1.5, "s", {}]): "t_ns",
        b"tlm.x\x00" + msgpack.packb([0, 0, "", {}]): "source",
        b"tlm.x\x00" + msgpack.packb([0, 0, 7, {}]): "source",
        b"tlm.x\x00" + msgpack.packb([0, 0, "s", [1]]): "body must be a map",
        b"tlm.x\x00" + msgpack.packb([0, 0, "s", {1: 2}]): "body key",
        b"tlm.x\x00" + msgpack.packb([0, 0, "s", {"e": msgpack.ExtType(5, b"x")}]): "extension type",
        b"_bus.other\x00" + msgpack.packb([0, 0, "s", {}]): "control topic",
    }
    for frame in bad_frames:
        injector.send(frame)
    pub.publish("tlm.eps", {"ok": 1})  # a good message from another link still gets through
    injector.send(encode_message("tlm.after", 0, 0, "injector", {"ok": 2}))
    got = sub.drain()
    assert sorted(m.topic for m in got) == ["tlm.after", "tlm.eps"]
    assert sub.malformed == len(bad_frames)
    assert len(sub.rejections) == len(bad_frames)
    for reason, expected in zip(sub.rejections, bad_frames.values()):
        assert expected in reason
    assert bus.stats()["all"]["malformed"] == len(bad_frames)
    injector.close(linger=0)


def test_rejections_list_is_bounded(bus):
    sub = bus.subscribe([""])
    injector = bus.context.socket(zmq.PUB)
    injector.bind("inproc://injector-bounded")
    sub.connect("inproc://injector-bounded")
    while not sub.malformed:
        injector.send(b"junk")
        sub.drain()
    for _ in range(500):
        injector.send(b"junk")
    sub.drain()
    assert sub.malformed > 500 and 0 < len(sub.rejections) < 500
    injector.close(linger=0)


def test_settle_then_first_message_arrives(clock):
    with Bus(clock.now_ns, name="settle") as bus:
        subs = [bus.subscribe([f"t{i}"], name=f"s{i}") for i in range(20)]
        assert bus.settle() >= 1
        assert all(s.settled for s in subs)
        pub = bus.publisher("p")
        for i in range(20):
            pub.publish(f"t{i}", {"i": i})
        for i, s in enumerate(subs):
            assert [m.body for m in s.drain()] == [{"i": i}]
        # Probes are not user messages.
        assert all(s.received == 1 and s.malformed == 0 for s in subs)


def test_settle_keeps_user_messages_read_while_waiting(clock):
    with Bus(clock.now_ns, name="settle2") as bus:
        pub = bus.publisher("p")
        early = bus.subscribe(["a"], name="early")
        bus.settle()
        pub.publish("a", {"n": 0})  # reaches early; early is settled so settle does not read it
        late = bus.subscribe(["a"], name="late")
        pub.publish("a", {"n": 1})  # may or may not reach late before it is settled
        bus.settle()
        pub.publish("a", {"n": 2})
        assert [m.body["n"] for m in early.drain()] == [0, 1, 2]
        late_got = [m.body["n"] for m in late.drain()]
        assert late_got[-1] == 2 and late.received + late.dropped_total == 2


def test_settle_raises_when_a_subscription_never_settles(clock):
    with Bus(clock.now_ns, name="never") as bus:
        lonely = connect_subscription("inproc://nobody-binds-this", ["x"], context=bus.context, name="lonely")
        with pytest.raises(RuntimeError, match="lonely"):
            bus.settle(max_rounds=3, extra=[lonely], poll_ms=1)
        lonely.close()


def test_tcp_loopback_round_trip(clock):
    with Bus(clock.now_ns, name="tcp") as bus:
        endpoint = bus.bind("tcp://127.0.0.1:*")
        assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":*")
        with connect_subscription(endpoint, ["tlm."], name="console") as remote:  # own context
            bus.settle(max_rounds=500, extra=[remote])
            pub = bus.publisher("eps")
            for i in range(50):
                pub.publish("tlm.eps", {"i": i, "soc": 0.5})
                clock.advance(10)
            got = []
            while len(got) < 50 and remote.poll(2_000):
                got.extend(remote.drain())
            assert [(m.seq, m.t_ns, m.body["i"]) for m in got] == [(i, 10 * i, i) for i in range(50)]
            assert remote.dropped_total == 0


def test_ipc_round_trip(clock, tmp_path):
    with Bus(clock.now_ns, name="ipc") as bus:
        endpoint = bus.bind(f"ipc://{tmp_path}/bus.sock")
        with connect_subscription(endpoint, ["tlm.eps"], name="bench") as remote:
            bus.settle(max_rounds=500, extra=[remote])
            bus.publisher("eps").publish("tlm.eps", {"v": 1})
            assert remote.poll(2_000)
            assert [m.body for m in remote.drain()] == [{"v": 1}]


def test_bind_rejects_inproc_and_names_are_unique(bus):
    with pytest.raises(ValueError, match="tcp"):
        bus.bind("inproc://x")
    bus.subscribe(["a"], name="dup")
    with pytest.raises(ValueError, match="dup"):
        bus.subscribe(["a"], name="dup")
    with pytest.raises(ValueError, match="policy"):
        bus.subscribe(["a"], policy="lossy")
    with pytest.raises(ValueError, match="hwm"):
        bus.subscribe(["a"], hwm=0)
    with pytest.raises(TypeError):
        bus.subscribe("tlm.eps")


def test_encode_validates_fields():
    with pytest.raises(ValueError, match="seq"):
        encode_message("t", -1, 0, "s", {})
    with pytest.raises(ValueError, match="t_ns"):
        encode_message("t", 0, 0.5, "s", {})
    with pytest.raises(ValueError, match="source"):
        encode_message("t", 0, 0, "", {})
    with pytest.raises(ValueError, match="NUL"):
        encode_message("t\x00u", 0, 0, "s", {})


def test_encoding_is_deterministic_and_single_frame():
    body = {"b": 1, "a": [1.5, "x", None, True, b"\x00\x01"], "n": {"k": -3}}
    frame = encode_message("tlm.x", 3, 17, "src", body)
    assert frame == encode_message("tlm.x", 3, 17, "src", dict(body))
    assert frame.startswith(b"tlm.x\x00")
    assert msgpack.unpackb(frame[6:]) == [3, 17, "src", body]


# -- properties --------------------------------------------------------------------------------

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_topics = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20
).filter(lambda t: not t.endswith(".") and not t.startswith("_bus."))


@given(
    topic=_topics,
    seq=st.integers(0, 2**64 - 1),
    t_ns=st.integers(0, 2**63),
    source=st.text(min_size=1, max_size=10),
    body=st.dictionaries(st.text(max_size=10), _values, max_size=6),
)
def test_encode_decode_round_trip(topic, seq, t_ns, source, body):
    frame = encode_message(topic, seq, t_ns, source, body)
    assert decode_message(frame) == Message(topic, seq, t_ns, source, body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | st.builds(lambda t, p: t + b"\x00" + p, st.binary(max_size=12), st.binary(max_size=60)))
def test_decode_random_bytes_returns_message_or_bus_decode_error(frame):
    try:
        message = decode_message(frame)
    except BusDecodeError as exc:
        assert str(exc)
    else:
        assert isinstance(message, Message) and message.raw == frame


def test_publish_after_close_raises_clearly(clock):
    bus = Bus(clock.now_ns, name="closed")
    pub = bus.publisher("p")
    bus.close()
    with pytest.raises(RuntimeError, match="closed"):
        pub.publish("a", {})
    assert pub.next_seq("a") == 0
    bus.close()  # idempotent


@settings(max_examples=40, deadline=None)
@given(
    hwm=st.integers(1, 40),
    ops=st.lists(st.one_of(st.tuples(st.sampled_from("abc"), st.integers(1, 120)), st.just("drain")), max_size=25),
)
def test_every_message_is_received_or_counted_dropped(hwm, ops):
    clock = SteppedClock()
    with Bus(clock.now_ns, name="prop") as bus:
        pub = bus.publisher("p")
        sub = bus.subscribe(["a", "b", "c"], hwm=hwm)
        bus.settle()
        got: list[Message] = []
        for op in ops:
            if op == "drain":
                got.extend(sub.drain())
            else:
                topic, count = op
                for _ in range(count):
                    pub.publish(topic, {})
                    clock.advance(1)
        got.extend(sub.drain())
        for topic in "abc":  # a final message per topic, on an empty queue, reveals any trailing gap
            pub.publish(topic, {})
            got.extend(sub.drain())
        for topic in "abc":
            seqs = [m.seq for m in got if m.topic == topic]
            assert seqs == sorted(set(seqs))
            assert len(seqs) + sub.dropped.get(topic, 0) == pub.next_seq(topic)
        assert sub.received == len(got)


def test_subscription_skips_only_when_nothing_it_wants_was_published():
    """The skip-empty-socket shortcut never hides a message: topics published before the
    subscription existed, prefix and exact filters, and frames from a connected outside peer."""
    with Bus(lambda: 0, name="skip") as bus:
        pub = bus.publisher("src")
        pub.publish("tlm.a", {"x": 1})  # the topic exists before the subscriptions do
        exact = bus.subscribe(["tlm.a"], name="exact")
        prefix = bus.subscribe(["tlm."], name="prefix")
        other = bus.subscribe(["tlm.b"], name="other")
        bus.settle()
        assert exact.drain() == [] and prefix.drain() == [] and other.drain() == []
        for i in range(3):
            pub.publish("tlm.a", {"x": i})
            assert [m.body["x"] for m in exact.drain()] == [i]
            assert [m.body["x"] for m in prefix.drain()] == [i]
            assert other.drain() == []
        pub.publish("tlm.b", {"y": 1})
        assert [m.topic for m in prefix.drain()] == ["tlm.b"] and [m.topic for m in other.drain()] == ["tlm.b"]
        # A budgeted drain that leaves frames behind keeps the subscription pending.
        for i in range(3):
            pub.publish("tlm.a", {"x": i})
        assert len(exact.drain(max_messages=2)) == 2 and len(exact.drain()) == 1
        # Frames from an outside peer, which the Bus cannot see being published, are read too.
        raw = bus.context.socket(zmq.PUB)
        raw.bind("inproc://skip-outside")
        other.connect("inproc://skip-outside")
        frame = encode_message("tlm.b", 0, 0, "outside", {"y": 2})
        for _ in range(100):  # slow joiner
            raw.send(frame)
            got = other.drain()
            if got:
                break
        assert got and got[0].source == "outside"
        raw.close(linger=0)


def test_skip_shortcut_with_subscriptions_that_drain_at_different_times():
    """Publish marks the subscriptions of a topic pending only while one of them has found its
    socket empty since; subscriptions draining out of step, or joining late, miss nothing."""
    with Bus(lambda: 0, name="skip2") as bus:
        a_pub, b_pub = bus.publisher("a"), bus.publisher("b")
        early = bus.subscribe(["tlm.x"], name="early")
        wide = bus.subscribe(["tlm."], name="wide")
        bus.settle()
        seen = {"early": [], "wide": [], "late": []}
        late = None
        for i in range(12):
            (a_pub if i % 3 else b_pub).publish("tlm.x", {"i": i})
            if i == 4:
                late = bus.subscribe(["tlm.x"], name="late")
            subs = [("early", early)] * (i % 2) + [("wide", wide)] * (i % 3 == 0)
            subs += [("late", late)] * (late is not None and i % 4 == 0)
            for name, sub in subs:
                seen[name] += [m.body["i"] for m in sub.drain()]
        for name, sub in (("early", early), ("wide", wide), ("late", late)):
            seen[name] += [m.body["i"] for m in sub.drain()]
            assert sub.dropped_total == 0 and sub.malformed == 0
        assert seen["early"] == seen["wide"] == list(range(12))
        assert seen["late"] == list(range(5, 12))


_FILTERS = (["tlm.a"], ["tlm."], [""], ["tlm.b", "rsp."])
_PUBLISHED_TOPICS = ("tlm.a", "tlm.b", "rsp.x", "evt.y")


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.one_of(
    st.tuples(st.just("publish"), st.sampled_from("pq"), st.sampled_from(_PUBLISHED_TOPICS), st.integers(1, 5)),
    st.tuples(st.just("drain"), st.integers(0, 5), st.one_of(st.none(), st.integers(0, 4))),
    st.tuples(st.just("subscribe"), st.integers(0, len(_FILTERS) - 1)),
    st.just(("settle",)),
), max_size=40))
def test_each_drain_takes_exactly_the_frames_waiting(ops):
    """Against a model of each subscription's queue (messages it wants, in publish order, and the
    settle probes, which use up a frame of a drain's budget): with no overflow, every drain returns
    exactly the oldest waiting messages, never later, never twice, whoever published what and
    whenever a subscription joined."""
    with Bus(lambda: 7, name="model") as bus:
        subs: list = []
        queues: list[list] = []

        def join(filters):
            subscription = bus.subscribe(filters, name=f"s{len(subs)}")
            for queue in queues:  # the new one's probe reaches every subscription
                queue.append(None)
            subs.append(subscription)
            queues.append([])
            assert bus.settle() == 1

        join(_FILTERS[0])
        for op in ops:
            if op[0] == "publish":
                _, source, topic, count = op
                for _ in range(count):
                    seq = bus.publisher(source).publish(topic, {"n": 1})
                    for subscription, queue in zip(subs, queues):
                        if subscription._wants(topic.encode() + b"\x00"):
                            queue.append((topic, source, seq))
            elif op[0] == "drain":
                _, index, budget = op
                if index >= len(subs):
                    continue
                queue = queues[index]
                taken = len(queue) if budget is None else min(budget, len(queue))
                expected = [item for item in queue[:taken] if item is not None]
                del queue[:taken]
                got = [(m.topic, m.source, m.seq) for m in subs[index].drain(budget)]
                assert got == expected
            elif op[0] == "subscribe":
                join(_FILTERS[op[1]])
            else:
                assert bus.settle() == 0  # all settled already: no probe sent
        for subscription, queue in zip(subs, queues):
            assert [(m.topic, m.source, m.seq) for m in subscription.drain()] == [i for i in queue if i is not None]
            assert subscription.drain() == [] and subscription.dropped_total == 0


def test_subscriptions_sharing_a_topic_keep_their_own_accounting(bus):
    """One publish is decoded once for all the subscriptions that want it; each still counts its
    own drops and gets every message it has room for, in order."""
    pub = bus.publisher("eps")
    small = bus.subscribe(["tlm.eps"], hwm=5, name="small")
    big = bus.subscribe(["tlm."], hwm=1000, name="big")
    late = bus.subscribe(["tlm.eps"], policy="latest", name="late")
    bus.settle()
    for i in range(40):
        pub.publish("tlm.eps", {"i": i, "nested": {"k": [i, i + 1]}})
    got_big = big.drain()
    got_small = small.drain()
    got_late = late.drain()
    assert [m.body["i"] for m in got_big] == list(range(40))
    assert [m.body["i"] for m in got_late] == [39] and late.superseded == 39
    assert [m.body["i"] for m in got_small] == list(range(len(got_small))) and len(got_small) < 40
    assert {m.seq: m for m in got_big}[got_small[3].seq] == got_small[3]
    pub.publish("tlm.eps", {"i": 40, "nested": {}})  # on empty queues: reveals the small one's gap
    assert [m.body["i"] for s in (small, big, late) for m in s.drain()] == [40, 40, 40]
    assert len(got_small) + 1 + small.dropped_total == 41
    assert big.dropped_total == 0 and late.dropped_total == 0


@settings(max_examples=60, deadline=None)
@given(
    hwm=st.integers(1, 12),
    ops=st.lists(st.one_of(st.tuples(st.sampled_from("ab"), st.integers(1, 40)), st.integers(0, 30)), max_size=30),
)
def test_the_pub_takes_in_reader_credit_exactly_when_a_sync_after_every_read_would(hwm, ops):
    """A subscription lets the PUB take in its commands only after reads that crossed a multiple of
    hwm + 1 (libzmq's credit point); what it receives and drops equals syncing after every read."""

    def play(sync_every_read: bool) -> tuple[list[tuple[str, int]], dict[str, int]]:
        clock = SteppedClock()
        with Bus(clock.now_ns, name="credit") as bus:
            pub = bus.publisher("p")
            sub = bus.subscribe(["a", "b"], hwm=hwm)
            if sync_every_read:
                sub._credit_every = None
            bus.settle()
            got = []
            for op in ops:
                if isinstance(op, int):  # a drain of at most op frames (0: all waiting)
                    got += [(m.topic, m.seq) for m in sub.drain(max_messages=op or None)]
                else:
                    topic, count = op
                    for _ in range(count):
                        pub.publish(topic, {})
                        clock.advance(1)
            got += [(m.topic, m.seq) for m in sub.drain()]
            return got, dict(sub.dropped)

    assert play(sync_every_read=False) == play(sync_every_read=True)
