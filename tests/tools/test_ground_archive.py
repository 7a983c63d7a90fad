"""The ground archive: dedup, rejects, commit-before-ack, ZeroMQ round trips and a SIGKILLed ground."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight.bus import Bus, decode_message, encode_message
from flight.downlink import Downlink, DownlinkConfig, LoopbackTransport, ZmqDownlinkTransport
from flight.rate_group import TickContext
from tests.flight.test_downlink import dictionary_with_downlink
from tools.ground_archive import GroundArchive, GroundReceiver, serve_ground_archive

REPO = Path(__file__).resolve().parents[2]
NS = 1_000_000_000


def frame(k: int, topic: str = "tlm.eps") -> bytes:
    return encode_message(topic, k, k * NS, "gen", {"k": k})


def batch(ids, store_id="sat-0", batch_id=1, frames=None):
    return {"type": "batch", "store_id": store_id, "batch_id": batch_id,
            "frames": frames if frames is not None else [[i, frame(i)] for i in ids]}


@pytest.fixture(scope="module")
def dictionary(tmp_path_factory):
    return dictionary_with_downlink(tmp_path_factory.mktemp("dictionary"))


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def test_archives_decoded_frames_and_acks_after_commit(tmp_path):
    archive = GroundArchive(tmp_path / "g.db")
    ack = archive.receive_batch(batch([1, 2, 3], batch_id=7))
    assert ack == {"type": "ack", "store_id": "sat-0", "batch_id": 7, "ids": [1, 2, 3]}
    # Committed before the ack was returned: another connection sees the rows.
    rows = sqlite3.connect(tmp_path / "g.db").execute(
        "SELECT frame_id, topic, t_ns, source, seq, frame FROM frames ORDER BY frame_id").fetchall()
    assert rows == [(i, "tlm.eps", i * NS, "gen", i, frame(i)) for i in (1, 2, 3)]
    assert decode_message(rows[0][5]).body == {"k": 1}
    archive.close()


def test_duplicates_are_ignored_and_acked_again_and_conflicts_kept_apart(tmp_path):
    archive = GroundArchive(tmp_path / "g.db")
    archive.receive_batch(batch([1, 2]))
    ack = archive.receive_batch(batch([2, 3], batch_id=2))
    assert ack["ids"] == [2, 3] and archive.duplicate_frames == 1
    # Same key, other bytes: the first copy stays, the second is a reject (and acknowledged).
    ack = archive.receive_batch(batch([], frames=[[1, frame(99)]], batch_id=3))
    assert ack["ids"] == [1]
    assert archive.frames("sat-0")[0] == (1, frame(1))
    assert any("conflicts" in reason for *_, reason in archive.reject_rows())
    # Another store's id 1 is another frame.
    archive.receive_batch(batch([1], store_id="sat-9"))
    assert archive.frame_ids("sat-9") == [1] and archive.frame_ids("sat-0") == [1, 2, 3]
    archive.close()


def test_malformed_frames_are_kept_with_a_reason_and_acknowledged(tmp_path):
    archive = GroundArchive(tmp_path / "g.db")
    entries = [[1, frame(1)], [2, b"no separator"], [3, "a str"], "not a pair", [True, frame(4)], [5, frame(5)]]
    ack = archive.receive_batch(batch([], frames=entries))
    assert ack["ids"] == [1, 2, 3, 5]  # entries without a usable id cannot be acknowledged
    assert archive.frame_ids("sat-0") == [1, 5]
    reasons = [r for *_, r in archive.reject_rows()]
    assert len(reasons) == 4 and archive.rejected_frames == 4
    assert any("NUL separator" in r for r in reasons) and any("not bytes" in r for r in reasons)
    # A resend of the same bad frame is kept once.
    archive.receive_batch(batch([], frames=[[2, b"no separator"]]))
    assert len(archive.reject_rows()) == 4
    archive.close()


@pytest.mark.parametrize("bad, fragment", [
    ([1, 2], "batch must be a map"),
    ({"type": "ack"}, "batch type must be 'batch'"),
    ({"type": "batch", "store_id": "", "batch_id": 1, "frames": []}, "store_id must be a non-empty str"),
    ({"type": "batch", "store_id": "s", "batch_id": "1", "frames": []}, "batch_id must be an int"),
    ({"type": "batch", "store_id": "s", "batch_id": 1, "frames": {}}, "frames must be a list"),
])
def test_malformed_batches_are_counted_kept_and_not_acked(tmp_path, bad, fragment):
    archive = GroundArchive(tmp_path / "g.db")
    assert archive.receive_batch(bad) is None
    assert archive.malformed_batches == 1 and fragment in archive.rejections[-1]
    assert archive.reject_rows()[-1][3] == archive.rejections[-1]
    archive.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200), st.builds(lambda o: msgpack.packb(o, use_bin_type=True), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.text(max_size=8), st.binary(max_size=16)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["type", "store_id", "batch_id", "frames", "x"]), children, max_size=5), max_leaves=12))))
def test_any_bytes_are_archived_or_rejected_never_raised(tmp_path_factory, data):
    archive = GroundArchive(tmp_path_factory.mktemp("fuzz") / "g.db")
    result = archive.receive_bytes(data)
    assert result is None or msgpack.unpackb(result)["type"] == "ack"
    archive.close()


def test_a_ground_dropped_before_its_acks_loses_nothing(tmp_path, dictionary):
    """Archive committed, process gone before the acks left: the resends are duplicates, ignored."""
    archive = GroundArchive(tmp_path / "g.db")
    state = ["up"]

    def ground(b):
        if state[0] == "dead":
            return None  # nobody listens: the batch is lost
        ack = archive.receive_batch(b)
        if state[0] == "dying":  # archived and committed, then killed before the ack left
            archive.close()
            state[0] = "dead"
            return None
        return ack

    t = [0]
    bus = Bus(lambda: t[0], name="ground-kill")
    gen, radio = bus.publisher("gen"), bus.publisher("radio")
    app = Downlink(bus, tmp_path / "dl.db", None, LoopbackTransport(ground),
                   DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, ack_timeout_s=5.0),
                   dictionary=dictionary)
    bus.settle()
    radio.publish("tlm.radio", {"in_contact": True, "station": "s", "downlink_rate_bps": 8000.0})
    for n in range(60):
        t[0] += NS
        gen.publish("tlm.training", {"n": n, "pad": b"q" * 100})
        if n == 20:
            state[0] = "dying"
        if n == 30:
            archive = GroundArchive(tmp_path / "g.db")  # restarted over the same file
            state[0] = "up"
        app.run(TickContext(tick=n, t_ns=t[0], period_ns=NS))
    for n in range(60, 200):
        t[0] += NS
        app.run(TickContext(tick=n, t_ns=t[0], period_ns=NS))
        if app.queued_frames == 0:
            break
    assert app.queued_frames == 0 and app.resent_frames > 0
    assert archive.duplicate_frames > 0
    next_id = app._next_id
    assert archive.frame_ids(app.store_id) == list(range(1, next_id))
    app.close()
    bus.close()
    archive.close()


def _drive(app, bus_time, gen, until, ticks_with_frames, poll=lambda: None, deadline_s=20.0):
    """Tick the onboard side (1 s of mission time per tick) while the ground runs in real time."""
    end = time.monotonic() + deadline_s
    n = 0
    while time.monotonic() < end:
        n += 1
        bus_time[0] += NS
        if n <= ticks_with_frames:
            for _ in range(3):
                gen.publish("tlm.training", {"n": n, "pad": b"r" * 120})
        app.run(TickContext(tick=n, t_ns=bus_time[0], period_ns=NS))
        poll()
        if n > ticks_with_frames and until():
            return n
    raise AssertionError("the downlink did not drain in time")


def test_zmq_round_trip_over_tcp(tmp_path, context, dictionary):
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.SNDHWM, 1000)
    router.setsockopt(zmq.RCVHWM, 1000)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    archive = GroundArchive(tmp_path / "g.db")
    receiver = GroundReceiver(archive, dealer)

    t = [0]
    bus = Bus(lambda: t[0], name="zmq-downlink")
    gen, radio = bus.publisher("gen"), bus.publisher("radio")
    transport = ZmqDownlinkTransport(router)
    app = Downlink(bus, tmp_path / "dl.db", None, transport,
                   DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, ack_timeout_s=20.0),
                   dictionary=dictionary)
    bus.settle()
    radio.publish("tlm.radio", {"in_contact": True, "station": "s", "downlink_rate_bps": 100_000.0})

    def poll():
        receiver.poll(1)
        time.sleep(0.001)

    _drive(app, t, gen, lambda: app.queued_frames == 0, ticks_with_frames=50, poll=poll)
    assert transport.hellos >= 1 and transport.peer is not None
    assert archive.frame_ids(app.store_id) == list(range(1, app._next_id))
    assert app.acked_frames == app._next_id - 1
    # Garbage from the ground is counted by the transport and shows in the app's telemetry.
    dealer.send(b"\xc1 not msgpack")
    dealer.send(msgpack.packb({"type": "ack", "store_id": "someone-else", "ids": [1]}))
    time.sleep(0.05)
    t[0] += NS
    app.run(TickContext(tick=10_000, t_ns=t[0], period_ns=NS))
    assert transport.malformed == 1 and app.malformed_acks == 1
    assert app.telemetry()["malformed_acks"] == 2
    app.close()
    bus.close()
    archive.close()


def test_router_without_a_peer_counts_send_failures(context):
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind_to_random_port("tcp://127.0.0.1")
    transport = ZmqDownlinkTransport(router)
    transport.send({"type": "batch", "store_id": "s", "batch_id": 1, "frames": []})
    assert transport.send_failures == 1 and transport.sent_batches == 0
    assert transport.receive_acks() == []


def test_serve_ground_archive_stops_on_request(tmp_path, context):
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()
    configured = []
    result = {}
    thread = threading.Thread(target=lambda: result.update(serve_ground_archive(
        f"tcp://127.0.0.1:{port}", tmp_path / "g.db", socket_setup=configured.append, stop=stop.is_set)))
    thread.start()
    try:
        peer, hello = router.recv_multipart()  # it says hello first
        assert msgpack.unpackb(hello)["type"] == "hello"
        router.send_multipart([peer, msgpack.packb(batch([1, 2]), use_bin_type=True)])
        peer, ack = router.recv_multipart()
        while msgpack.unpackb(ack)["type"] != "ack":  # skip heartbeats
            peer, ack = router.recv_multipart()
        assert msgpack.unpackb(ack)["ids"] == [1, 2]
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive() and len(configured) == 1
    assert result["frames_archived"] == 2 and result["acks"] == 1


def _start_ground(port: int, archive: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tools.ground_archive", f"tcp://127.0.0.1:{port}",
                             "--archive", str(archive)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigkilled_ground_process_loses_nothing(tmp_path, context, dictionary):
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.SNDHWM, 1000)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    path = tmp_path / "g.db"
    t = [0]
    bus = Bus(lambda: t[0], name="sigkill-ground")
    gen, radio = bus.publisher("gen"), bus.publisher("radio")
    transport = ZmqDownlinkTransport(router)
    app = Downlink(bus, tmp_path / "dl.db", None, transport,
                   DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, ack_timeout_s=10.0),
                   dictionary=dictionary)
    bus.settle()
    radio.publish("tlm.radio", {"in_contact": True, "station": "s", "downlink_rate_bps": 50_000.0})
    ground = _start_ground(port, path)
    children = [ground]
    published = 0
    try:
        # Run until the ground has acknowledged some frames, then SIGKILL it mid-stream.
        end = time.monotonic() + 20.0
        n = 0
        while app.acked_frames < 100 and time.monotonic() < end:
            n += 1
            t[0] += NS
            for _ in range(3):
                gen.publish("tlm.training", {"n": n, "pad": b"s" * 120})
                published += 1
            app.run(TickContext(tick=n, t_ns=t[0], period_ns=NS))
            time.sleep(0.002)
        assert app.acked_frames >= 100
        ground.send_signal(signal.SIGKILL)
        ground.wait(timeout=10)
        # The stack goes on while the ground is down: sends fail or are lost, nothing is acked.
        acked = app.acked_frames
        for _ in range(30):
            n += 1
            t[0] += NS
            gen.publish("tlm.training", {"n": n, "pad": b"s" * 120})
            published += 1
            app.run(TickContext(tick=n, t_ns=t[0], period_ns=NS))
            time.sleep(0.002)
        assert app.acked_frames - acked < 50  # at most acks already in flight at the kill
        ground = _start_ground(port, path)
        children.append(ground)
        end = time.monotonic() + 20.0
        while app.queued_frames and time.monotonic() < end:
            n += 1
            t[0] += NS
            app.run(TickContext(tick=n, t_ns=t[0], period_ns=NS))
            time.sleep(0.002)
        assert app.queued_frames == 0
        assert app.resent_frames > 0  # what was in flight at the kill, or sent into the void, went again
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
    archive = GroundArchive(path)
    assert archive.frame_ids(app.store_id) == list(range(1, app._next_id))  # all of it, each once
    generated = [decode_message(f) for _, f in archive.frames(app.store_id)]
    assert sum(m.source == "gen" for m in generated) == published
    assert [m.seq for m in generated if m.source == "gen"] == list(range(published))  # in order, no gap
    app.close()
    bus.close()
    archive.close()
