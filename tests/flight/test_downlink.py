"""Store-and-forward downlink: rate, priority, acknowledgement, eviction, and kill-and-restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight.bus import Bus, decode_message
from flight.dictionary import default_dictionary, load_dictionary
from flight.downlink import (
    PRIORITY_BULK,
    PRIORITY_EVENT,
    PRIORITY_HOUSEKEEPING,
    Downlink,
    DownlinkConfig,
    DownlinkStoreError,
    LoopbackTransport,
    default_priority_of,
    dictionary_priority_of,
    make_priority_of,
)
from flight.rate_group import TickContext
from tools.ground_archive import GroundArchive

NS = 1_000_000_000
REPO = Path(__file__).resolve().parents[2]
QUIET = DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6)  # no periodic self-telemetry

# The downlink's declarations, as proposed for flight/dictionary/downlink.toml: used here until the
# packaged dictionary has them.
DOWNLINK_TOML = """
description = "Store-and-forward downlink: telemetry and events queued on board in SQLite, sent in priority order during ground passes, deleted when the ground acknowledges them"
commandable = false
downlink = "housekeeping"

[telemetry]
in_contact = { type = "bool", description = "a ground station is in view (from tlm.radio)" }
station = { type = "string", description = "the station in view (empty when none)" }
queued_frames = { type = "int", description = "frames stored and not yet acknowledged by the ground" }
queued_bytes = { type = "int", units = "B", description = "bytes of the frames queued" }
queued_frames_events = { type = "int", description = "queued frames of priority 0 (events and command responses)" }
queued_bytes_events = { type = "int", units = "B", description = "bytes queued at priority 0" }
queued_frames_housekeeping = { type = "int", description = "queued frames of priority 1 (housekeeping telemetry)" }
queued_bytes_housekeeping = { type = "int", units = "B", description = "bytes queued at priority 1" }
queued_frames_bulk = { type = "int", description = "queued frames of priority 2 (bulk telemetry)" }
queued_bytes_bulk = { type = "int", units = "B", description = "bytes queued at priority 2" }
in_flight_frames = { type = "int", description = "frames sent and waiting for an acknowledgement" }
sent_frames = { type = "int", description = "frames handed to the transport (resends included)" }
sent_bytes = { type = "int", units = "B", description = "bytes charged against airtime: frames plus per-frame overhead" }
batches_sent = { type = "int", description = "batches handed to the transport" }
acked_frames = { type = "int", description = "frames the ground acknowledged (deleted on board)" }
resent_frames = { type = "int", description = "frames sent again after the ack timeout" }
evicted_frames = { type = "int", yellow_high = 1.0, description = "frames dropped because the queue was full (lowest priority, oldest first)" }
evicted_bytes = { type = "int", units = "B", description = "bytes dropped because the queue was full" }
evicted_frames_events = { type = "int", red_high = 1.0, description = "priority-0 frames dropped (events)" }
evicted_frames_housekeeping = { type = "int", yellow_high = 1.0, description = "priority-1 frames dropped (housekeeping)" }
evicted_frames_bulk = { type = "int", yellow_high = 1.0, description = "priority-2 frames dropped (bulk)" }
decimated_frames = { type = "int", description = "housekeeping and bulk frames left out by the configured decimation periods (kept in the onboard telemetry store)" }
malformed_acks = { type = "int", yellow_high = 1.0, description = "acknowledgements rejected (malformed, or for another store) or undecodable" }
malformed_radio = { type = "int", yellow_high = 1.0, description = "radio samples with an unusable rate or station (taken as no contact)" }
transport_errors = { type = "int", yellow_high = 1.0, description = "transport calls that raised (counted; frames time out and go again)" }
passes = { type = "int", description = "contacts begun since start" }
pass_sent_bytes = { type = "int", units = "B", description = "bytes sent in the pass in progress (0 out of contact)" }
boots = { type = "int", description = "times the store has been opened (restarts + 1)" }

[events]
PASS_STARTED = { severity = "ACTIVITY_HI", description = "a ground station came into view: downlink begins (queue size)" }
PASS_ENDED = { severity = "ACTIVITY_HI", description = "the pass ended: frames and bytes sent, frames acknowledged, frames still queued" }
QUEUE_EVICTED = { severity = "WARNING_HI", description = "the queue was full and frames were dropped, lowest priority oldest first (one per event_interval_s)" }
ACK_REJECTED = { severity = "WARNING_LO", description = "an acknowledgement was malformed or for another store (one per event_interval_s)" }
TRANSPORT_ERROR = { severity = "WARNING_HI", description = "the transport raised on send or receive (one per event_interval_s)" }
"""


def dictionary_with_downlink(folder: Path):
    """The packaged dictionary if it declares the downlink, else it plus DOWNLINK_TOML."""
    packaged = default_dictionary()
    if "downlink" in packaged.components:
        return packaged
    folder.mkdir(parents=True, exist_ok=True)
    for source in (REPO / "flight" / "dictionary").glob("*.toml"):
        (folder / source.name).write_text(source.read_text())
    (folder / "downlink.toml").write_text(DOWNLINK_TOML)
    return load_dictionary(folder)


@pytest.fixture(scope="module")
def dictionary(tmp_path_factory):
    return dictionary_with_downlink(tmp_path_factory.mktemp("dictionary"))


class Onboard:
    """One life of the onboard side: a bus on a stepped clock, a radio, a generator and the app."""

    dictionary = None  # set once per module by the autouse fixture below

    def __init__(self, path: Path, transport, config: DownlinkConfig = QUIET, t_ns: int = 0, priority_of=None) -> None:
        self.t_ns = t_ns
        self.tick_index = 0
        self.bus = Bus(lambda: self.t_ns, name="downlink-test")
        self.gen = self.bus.publisher("gen")
        self.radio = self.bus.publisher("radio")
        self.transport = transport
        self.app = Downlink(self.bus, path, priority_of, transport, config, created_t_ns=0,
                            dictionary=Onboard.dictionary)
        self.bus.settle()

    def set_radio(self, in_contact: bool, rate_bps: float = 80_000.0, station: str = "Svalbard") -> None:
        self.radio.publish("tlm.radio", {"in_contact": in_contact, "station": station if in_contact else "",
                                         "downlink_rate_bps": rate_bps if in_contact else 0.0})

    def tick(self, dt_ns: int = NS) -> None:
        self.t_ns += dt_ns
        self.tick_index += 1
        self.app.run(TickContext(tick=self.tick_index, t_ns=self.t_ns, period_ns=dt_ns))

    def kill(self) -> None:
        """Die without an orderly close: whatever the app holds in memory is gone."""
        self.bus.close()
        self.app = None


@pytest.fixture(autouse=True)
def _declared(dictionary):
    Onboard.dictionary = dictionary


def sent_frames(transport: LoopbackTransport) -> list[tuple[int, bytes]]:
    return [(i, frame) for batch in transport.batches for i, frame in batch["frames"]]


def test_default_priorities_follow_the_dictionary():
    assert default_priority_of("evt.power") == PRIORITY_EVENT
    assert default_priority_of("rsp.eps") == PRIORITY_EVENT
    assert default_priority_of("tlm.eps") == PRIORITY_HOUSEKEEPING
    assert default_priority_of("tlm.training") == PRIORITY_BULK  # declared downlink = "bulk"
    assert default_priority_of("tlm.no_such_component") == PRIORITY_BULK
    dictionary = default_dictionary()
    for name, component in dictionary.components.items():
        expected = PRIORITY_HOUSEKEEPING if component.downlink == "housekeeping" else PRIORITY_BULK
        assert dictionary_priority_of(dictionary)(f"tlm.{name}") == expected
    custom = make_priority_of({"tlm.training"})
    assert custom("tlm.training") == PRIORITY_HOUSEKEEPING and custom("tlm.eps") == PRIORITY_BULK


def test_out_of_contact_everything_is_queued_and_nothing_sent(tmp_path):
    transport = LoopbackTransport()
    board = Onboard(tmp_path / "dl.db", transport)
    board.set_radio(False)
    for k in range(20):
        board.gen.publish("evt.gen", {"k": k})
        board.gen.publish("tlm.training", {"k": k})
        board.tick()
    assert not transport.batches
    app = board.app
    # 40 generated + the radio sample + the app's first telemetry packet.
    assert app.queued_frames == 42
    tlm = app.telemetry()
    assert tlm["queued_frames_events"] == 20
    assert tlm["queued_frames_bulk"] + tlm["queued_frames_housekeeping"] == 22 and not tlm["in_contact"]
    assert tlm["queued_frames_bulk"] >= 20
    rows = sqlite3.connect(tmp_path / "dl.db").execute("SELECT COUNT(*), SUM(size) FROM queue").fetchone()
    assert rows == (42, app.queued_bytes)  # committed: another connection sees them
    board.kill()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate_bps=st.floats(2_000.0, 200_000.0), body_bytes=st.lists(st.integers(0, 3000), min_size=1, max_size=8),
       dt_ms=st.lists(st.integers(100, 3000), min_size=5, max_size=40))
def test_bytes_sent_never_exceed_rate_times_time_in_contact(tmp_path_factory, rate_bps, body_bytes, dt_ms):
    path = tmp_path_factory.mktemp("rate") / "dl.db"
    transport = LoopbackTransport()
    board = Onboard(path, transport, DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, ack_timeout_s=1e6))
    board.set_radio(False)
    for k in range(300):  # far more than one pass can carry
        board.gen.publish("tlm.bulk", {"k": k, "pad": b"x" * body_bytes[k % len(body_bytes)]})
    board.tick()
    board.set_radio(True, rate_bps)
    board.tick()  # acquisition: no airtime yet for the interval that began out of contact
    aos_ns = board.t_ns
    for dt in dt_ms:
        board.set_radio(True, rate_bps)
        board.tick(dt * 1_000_000)
    los_ns = board.t_ns
    contact_s = (los_ns - aos_ns) / NS
    frames = sent_frames(transport)
    sent = sum(len(f) for _, f in frames)
    charged = sent + 16 * len(frames)
    assert charged <= rate_bps * contact_s / 8 + 1e-6
    assert board.app.sent_bytes == charged
    if board.app.queued_frames > board.app.in_flight_frames:
        # Frames wait: the link is used, short of the limit by less than one (largest) frame.
        largest = sqlite3.connect(path).execute("SELECT MAX(size) FROM queue").fetchone()[0]
        assert charged > rate_bps * contact_s / 8 - (largest + 16) - 1
    else:
        assert board.app.in_flight_frames == board.app.queued_frames > 300  # all of it went down
    board.kill()


def test_sends_in_priority_order_then_oldest_first(tmp_path):
    transport = LoopbackTransport()  # no ground: nothing is acknowledged in this pass
    board = Onboard(tmp_path / "dl.db", transport)
    board.set_radio(False)
    queued = []
    for k in range(60):
        topic = ("evt.gen", "tlm.eps", "tlm.training")[(k * 7) % 3]
        board.gen.publish(topic, {"k": k, "pad": b"p" * 200})
        queued.append((default_priority_of(topic), k))
        if k % 10 == 9:
            board.tick()
    for _ in range(8):  # a short pass: ~1250 bytes a second, not all of it goes down
        board.set_radio(True, 10_000.0)
        board.tick()
    order = []
    for _, frame in sent_frames(transport):
        m = decode_message(frame)
        if m.source == "gen":
            order.append((default_priority_of(m.topic), m.body["k"]))
    assert 0 < len(order) < len(queued)
    assert order == sorted(queued)[:len(order)]
    board.kill()


def test_decimation_keeps_one_frame_per_period_and_every_event(tmp_path):
    config = DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, housekeeping_period_s=10.0,
                            bulk_period_s=60.0)
    board = Onboard(tmp_path / "dl.db", LoopbackTransport(), config)
    for k in range(120):
        board.gen.publish("evt.gen", {"k": k})
        board.gen.publish("tlm.eps", {"k": k})
        board.gen.publish("tlm.training", {"k": k})
        board.tick()
    rows = sqlite3.connect(tmp_path / "dl.db").execute("SELECT topic, t_ns FROM queue WHERE topic != 'tlm.downlink'"
                                                      " ORDER BY id").fetchall()
    by_topic = {topic: [t for tp, t in rows if tp == topic] for topic in ("evt.gen", "tlm.eps", "tlm.training")}
    assert len(by_topic["evt.gen"]) == 120
    # Published at 0..119 s: the first frame at or after each multiple of the period.
    assert by_topic["tlm.eps"] == [t * NS for t in range(0, 120, 10)]
    assert by_topic["tlm.training"] == [0, 60 * NS]
    assert board.app.decimated_frames == (120 - 12) + (120 - 2)
    assert board.app.telemetry()["decimated_frames"] == board.app.decimated_frames
    board.kill()


def test_unacknowledged_frames_are_resent_after_the_timeout(tmp_path):
    archive = GroundArchive(tmp_path / "ground.db")
    lost = []

    def lossy_ground(batch):
        ack = archive.receive_batch(batch)
        if len(lost) < 1:  # the first ack is lost on the way up
            lost.append(ack)
            return None
        return ack

    transport = LoopbackTransport(lossy_ground)
    config = DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, ack_timeout_s=5.0)
    board = Onboard(tmp_path / "dl.db", transport, config)
    board.set_radio(False)
    for k in range(5):
        board.gen.publish("evt.gen", {"k": k})
    board.tick()
    board.set_radio(True, 1e6)
    board.tick()  # AOS: no airtime yet
    board.tick()  # everything queued goes down in one batch, whose ack is lost
    first = [i for i, _ in transport.batches[0]["frames"]]
    for _ in range(4):
        board.tick()
    assert board.app.resent_frames == 0 and board.app.in_flight_frames == len(first)
    for _ in range(3):
        board.tick()
    assert board.app.resent_frames == len(first)
    resent = [i for batch in list(transport.batches)[1:] for i, _ in batch["frames"]]
    assert set(first) <= set(resent)
    assert board.app.queued_frames == 0 or set(first).isdisjoint(
        r[0] for r in sqlite3.connect(tmp_path / "dl.db").execute("SELECT id FROM queue"))
    assert archive.duplicate_frames == len(first)
    board.kill()
    archive.close()


def test_kill_and_restart_onboard_loses_nothing_and_resends_nothing_acknowledged(tmp_path):
    archive = GroundArchive(tmp_path / "ground.db")
    path = tmp_path / "dl.db"
    acks_delivered: set[int] = set()
    published: set[int] = set()
    k = 0
    t_ns = 0
    config = DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, ack_timeout_s=4.0)

    class RecordingTransport(LoopbackTransport):
        def __init__(self):
            calls = [0]

            def ground(batch):  # every third ack is lost
                calls[0] += 1
                ack = archive.receive_batch(batch)
                return None if calls[0] % 3 == 0 else ack

            super().__init__(ground)

        def receive_acks(self):
            acks = super().receive_acks()
            for ack in acks:
                acks_delivered.update(ack["ids"])
            return acks

    lives = []
    # Four lives, each killed at a different point: out of contact, mid-pass, just after an ack.
    for life, (ticks, contact) in enumerate([(37, range(10, 30)), (23, range(0, 23)), (41, range(5, 15)),
                                             (15, range(3, 9))]):
        transport = RecordingTransport()
        board = Onboard(path, transport, config, t_ns=t_ns)
        acked_before = set(acks_delivered)  # processed and committed by earlier lives
        for n in range(ticks):
            for _ in range(3):
                board.gen.publish("tlm.bulk", {"k": k, "pad": b"b" * 150})
                published.add(k)
                k += 1
            board.set_radio(n in contact, 20_000.0)
            board.tick()
        lives.append(board.app.store_id)
        resent_acked = {i for i, _ in sent_frames(transport)} & acked_before
        assert not resent_acked, f"life {life} resent acknowledged frames {sorted(resent_acked)[:5]}"
        t_ns = board.t_ns
        board.kill()
    assert len(set(lives)) == 1  # the store keeps its identity across restarts

    # A last life drains the queue over one long pass.
    transport = LoopbackTransport(archive.receive_batch)
    board = Onboard(path, transport, config, t_ns=t_ns)
    board.set_radio(True, 200_000.0)  # once: a sample each tick would keep the queue from emptying
    for _ in range(400):
        board.tick()
        if board.app.queued_frames == 0:
            break
    assert board.app.queued_frames == 0
    store_id = board.app.store_id
    board.app.close()
    board.kill()
    ids = archive.frame_ids(store_id)
    next_id = dict(sqlite3.connect(path).execute("SELECT key, value FROM meta").fetchall())["next_id"]
    assert ids == list(range(1, next_id))  # every id ever issued, archived exactly once
    generated = {decode_message(f).body["k"] for _, f in archive.frames(store_id)
                 if decode_message(f).source == "gen"}
    assert generated == published
    archive.close()


def test_ids_are_never_reused_after_the_queue_empties(tmp_path):
    path = tmp_path / "dl.db"
    archive = GroundArchive(tmp_path / "ground.db")
    board = Onboard(path, LoopbackTransport(archive.receive_batch))
    board.gen.publish("evt.gen", {"k": 0})
    board.set_radio(True, 1e6)
    for _ in range(4):
        board.tick()
    assert board.app.queued_frames == 0
    first = archive.frame_ids(board.app.store_id)
    t_ns = board.t_ns
    board.app.close()
    board.kill()
    board = Onboard(path, LoopbackTransport(archive.receive_batch), t_ns=t_ns)
    board.gen.publish("evt.gen", {"k": 1})
    board.set_radio(True, 1e6)
    for _ in range(4):
        board.tick()
    assert board.app.boots == 2
    again = archive.frame_ids(board.app.store_id)
    assert again[:len(first)] == first and min(again[len(first):]) > max(first)
    assert archive.duplicate_frames == 0 and not archive.reject_rows()
    board.kill()
    archive.close()


def test_eviction_drops_lowest_priority_oldest_first_and_says_so(tmp_path):
    config = DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, max_queue_bytes=20_000,
                            event_interval_s=100.0)
    board = Onboard(tmp_path / "dl.db", LoopbackTransport(), config)
    events = board.bus.subscribe(["evt.downlink"], name="watch")
    board.bus.settle()
    board.set_radio(False)
    for k in range(60):
        board.gen.publish("tlm.training", {"k": k, "pad": b"n" * 300})
        board.gen.publish("tlm.eps", {"k": k, "pad": b"e" * 100})
        board.gen.publish("evt.gen", {"k": k})
        board.tick()
    app = board.app
    assert app.queued_bytes <= 20_000
    assert app.evicted_frames[PRIORITY_BULK] > 0
    assert app.evicted_frames[PRIORITY_EVENT] == 0
    rows = sqlite3.connect(tmp_path / "dl.db").execute("SELECT topic, frame FROM queue ORDER BY id").fetchall()
    bulk_left = [decode_message(f).body["k"] for topic, f in rows if topic == "tlm.training"]
    # Oldest first: what is left of the bulk is its newest frames, contiguous.
    assert bulk_left == list(range(60 - len(bulk_left), 60))
    assert {decode_message(f).body["k"] for topic, f in rows if topic == "evt.gen"} == set(range(60))
    tlm = app.telemetry()
    assert tlm["evicted_frames"] == sum(app.evicted_frames)
    assert tlm["evicted_frames"] == tlm["evicted_frames_bulk"] + tlm["evicted_frames_housekeeping"]
    evicted_events = [m for m in events.drain() if m.body["name"] == "QUEUE_EVICTED"]
    # Throttled to one per 100 s of mission time over 60 s: one event, and its count is current.
    assert len(evicted_events) == 1
    board.kill()


@pytest.mark.parametrize("ack, fragment", [
    ("not an ack", "ack must be a map"),
    ({"type": "nack", "store_id": "sunlit-0", "ids": [1]}, "ack type must be 'ack'"),
    ({"type": "ack", "store_id": "other-5", "ids": [1]}, "ack for store 'other-5'"),
    ({"type": "ack", "store_id": "sunlit-0", "ids": 1}, "ack ids must be a list"),
    ({"type": "ack", "store_id": "sunlit-0", "ids": [True]}, "ack id True"),
    ({"type": "ack", "store_id": "sunlit-0", "ids": [0]}, "ack id 0"),
    ({"type": "ack", "store_id": "sunlit-0", "ids": [1, 10**6]}, "ack id 1000000"),
    ({"type": "ack", "store_id": "sunlit-0", "ids": ["1"]}, "ack id '1'"),
])
def test_malformed_acks_are_counted_and_ignored(tmp_path, ack, fragment):
    transport = LoopbackTransport()
    board = Onboard(tmp_path / "dl.db", transport)
    board.gen.publish("evt.gen", {"k": 0})
    board.set_radio(False)
    board.tick()
    queued = board.app.queued_frames
    transport.push_ack(ack)
    board.tick()
    assert board.app.malformed_acks == 1
    assert fragment in board.app.rejections[-1]
    assert board.app.queued_frames >= queued  # nothing deleted
    assert board.app.telemetry()["malformed_acks"] == 1
    board.kill()


def test_a_failing_transport_is_counted_not_raised(tmp_path):
    class Broken:
        def send(self, batch):
            raise OSError("antenna on fire")

        def receive_acks(self):
            raise RuntimeError("receiver wedged")

    board = Onboard(tmp_path / "dl.db", Broken())
    board.gen.publish("evt.gen", {"k": 0})
    for _ in range(3):
        board.set_radio(True, 1e6)
        board.tick()
    app = board.app
    assert app.transport_errors >= 4  # receive every tick, send once there was airtime
    assert app.in_flight_frames > 0  # counted as sent: they time out and go again
    assert any("antenna on fire" in r for r in app.rejections)
    board.kill()


def test_malformed_or_stale_radio_means_no_contact(tmp_path):
    transport = LoopbackTransport()
    config = DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=5.0)
    board = Onboard(tmp_path / "dl.db", transport, config)
    board.gen.publish("evt.gen", {"k": 0})
    for rate in (-1.0, "fast", float("nan")):
        board.radio.publish("tlm.radio", {"in_contact": True, "station": "x", "downlink_rate_bps": rate})
        board.tick()
    assert board.app.malformed_radio == 3 and not board.app.in_contact
    board.set_radio(True, 1e6)
    board.tick()
    assert board.app.in_contact
    for _ in range(6):  # the radio goes silent: its last word ages out
        board.tick()
    assert not board.app.in_contact
    board.kill()


def test_pass_events_report_the_bytes_sent(tmp_path):
    archive = GroundArchive(tmp_path / "ground.db")
    board = Onboard(tmp_path / "dl.db", LoopbackTransport(archive.receive_batch))
    watch = board.bus.subscribe(["evt.downlink"], name="watch")
    board.bus.settle()
    for k in range(10):
        board.gen.publish("tlm.training", {"k": k, "pad": b"x" * 500})
    board.set_radio(False)
    board.tick()
    for _ in range(5):
        board.set_radio(True, 16_000.0)
        board.tick()
    board.set_radio(False)
    board.tick()
    names = [(m.body["name"], m.body) for m in watch.drain()]
    assert [n for n, _ in names] == ["PASS_STARTED", "PASS_ENDED"]
    end = names[1][1]
    assert end["sent_bytes"] == board.app.sent_bytes > 0 and end["station"] == "Svalbard"
    assert end["sent_bytes"] <= 16_000 * 4 / 8  # four intervals in contact
    board.kill()
    archive.close()


def test_a_corrupt_store_is_a_clear_error(tmp_path):
    path = tmp_path / "dl.db"
    path.write_bytes(b"this is not a database" * 100)
    bus = Bus(lambda: 0, name="corrupt")
    with pytest.raises(DownlinkStoreError, match=str(path)):
        Downlink(bus, path, None, LoopbackTransport(), dictionary=Onboard.dictionary)
    bus.close()


ONBOARD_CHILD = textwrap.dedent("""
    import sys
    from flight.bus import Bus
    from flight.downlink import Downlink, DownlinkConfig, LoopbackTransport
    from flight.rate_group import TickContext
    from flight.dictionary import load_dictionary
    from tools.ground_archive import GroundArchive

    store, ground, t0, drain = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "drain"
    dictionary = load_dictionary(sys.argv[5]) if sys.argv[5] != "-" else None
    archive = GroundArchive(ground)
    calls = [0]
    def lossy(batch):
        calls[0] += 1
        ack = archive.receive_batch(batch)
        return None if calls[0] % 4 == 0 else ack
    t = [t0]
    bus = Bus(lambda: t[0], name="child")
    gen, radio = bus.publisher("gen"), bus.publisher("radio")
    config = DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, ack_timeout_s=3.0)
    app = Downlink(bus, store, None, LoopbackTransport(lossy), config, dictionary=dictionary)
    bus.settle()
    print("READY", flush=True)
    n = 0
    while True:
        n += 1
        t[0] += 10**9
        if not drain:
            for _ in range(4):
                gen.publish("tlm.bulk", {"t": t[0], "pad": b"z" * 200})
        if not drain or n == 1:  # draining: one sample, or the samples themselves never drain
            radio.publish("tlm.radio", {"in_contact": drain or n % 7 != 0, "station": "s",
                                        "downlink_rate_bps": 40_000.0})
        app.run(TickContext(tick=n, t_ns=t[0], period_ns=10**9))
        print("T", t[0], flush=True)
        if drain and app.queued_frames == 0:
            app.close()
            print("DRAINED", flush=True)
            break
""")


def test_sigkilled_onboard_process_loses_nothing_acknowledged(tmp_path):
    store, ground = tmp_path / "dl.db", tmp_path / "ground.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    folder = "-" if "downlink" in default_dictionary().components else str(tmp_path / "dictionary")
    if folder != "-":
        dictionary_with_downlink(Path(folder))
    t_ns = 0
    for delay_s in (0.15, 0.3, 0.05, 0.4):
        child = subprocess.Popen([sys.executable, "-c", ONBOARD_CHILD, str(store), str(ground), str(t_ns), "run",
                                  folder],
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert child.stdout.readline().strip() == "READY"
        time.sleep(delay_s)
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
        times = [int(line.split()[1]) for line in out.splitlines() if line.startswith("T ")]
        t_ns = max(times, default=t_ns) + 10**9  # mission time goes on across the restart
    child = subprocess.run([sys.executable, "-c", ONBOARD_CHILD, str(store), str(ground), str(t_ns), "drain", folder],
                           capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert "DRAINED" in child.stdout, child.stderr
    meta = dict(sqlite3.connect(store).execute("SELECT key, value FROM meta").fetchall())
    assert meta["boots"] == 5
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0
    archive = GroundArchive(ground)
    # Every id the store ever committed (they are issued contiguously) is archived exactly once.
    assert archive.frame_ids(meta["store_id"]) == list(range(1, meta["next_id"]))
    assert not archive.reject_rows()
    archive.close()


def test_a_long_commit_interval_loses_nothing_on_close_and_only_unsent_frames_on_a_kill(tmp_path):
    # Out of contact, queued frames are inserted and committed once per commit interval.
    config = DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, commit_interval_s=60.0)
    board = Onboard(tmp_path / "closed.db", LoopbackTransport(), config)
    board.set_radio(False)
    for k in range(30):
        board.gen.publish("tlm.training", {"k": k})
        board.tick()
    queued = board.app.queued_frames
    board.app.close()  # orderly: everything queued is in the file
    rows = sqlite3.connect(tmp_path / "closed.db").execute("SELECT COUNT(*), SUM(size) FROM queue").fetchone()
    assert rows[0] == queued == 32  # 30 generated + the radio sample + the first telemetry packet
    board.kill()

    board = Onboard(tmp_path / "killed.db", LoopbackTransport(), config)
    board.set_radio(False)
    for k in range(90):
        board.gen.publish("tlm.training", {"k": k})
        board.tick()
    # The first tick committed, then tick 61: frames of ticks 62..90 are not in the file yet.
    committed = sqlite3.connect(tmp_path / "killed.db").execute("SELECT COUNT(*) FROM queue").fetchone()[0]
    assert committed == board.app.queued_frames - 29
    board.kill()
    # A restart finds what was committed; ids go on from there, and nothing of it was ever sent.
    transport = LoopbackTransport()
    again = Onboard(tmp_path / "killed.db", transport, config, t_ns=200 * NS)
    assert again.app.queued_frames == committed
    again.set_radio(True)
    for _ in range(20):
        again.tick()
    assert sorted(i for i, _ in sent_frames(transport))[:committed] == list(range(1, committed + 1))
    again.app.close()
    again.kill()


def test_frames_queued_between_commits_go_down_in_a_pass(tmp_path):
    # Frames held in memory for the next commit are written before the pass reads the queue.
    config = DownlinkConfig(telemetry_period_s=1e6, radio_max_age_s=1e6, commit_interval_s=1e6)
    transport = LoopbackTransport()
    board = Onboard(tmp_path / "dl.db", transport, config)
    board.set_radio(False)
    for k in range(5):
        board.gen.publish("evt.gen", {"k": k})
        board.tick()
    board.set_radio(True)
    board.tick()
    board.tick()
    bodies = [decode_message(frame).body for _, frame in sent_frames(transport)]
    assert [b["k"] for b in bodies if "k" in b] == [0, 1, 2, 3, 4]
    board.app.close()
    board.kill()
