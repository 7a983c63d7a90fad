"""The transport floor of a SIL day: what "every telemetry message really crossing the bus and
reaching the onboard store" costs in Python before any flight software runs.

The SIL's own traffic is recorded first: every message of ``capture_ticks`` ticks of a modeled
SilRun (topic, source, mission time, body, as the store received them) and every subscription's
topic filters. It is then replayed with nothing but the transport and the store, as the cheapest
hand-written Python would do them:

- ``per_message``: one ZeroMQ frame per message (topic, NUL, msgpack([seq, t_ns, source, body])),
  one PUB, a SUB per SIL subscription with the same filters; each SUB reads exactly the frames it
  is owed (no empty-socket probes); each publish is unpacked once, by the first SUB to read it, and
  the others reuse it (as Sunlit's bus does); the store's SUB also makes each message a row
  (non-scalar values as JSON, the store's encoder) and writes them to SQLite (WAL, synchronous
  NORMAL, a table per topic created beforehand) with one executemany per table and a commit every
  ``flush_every_ticks`` ticks, as the store does. This is the contract Sunlit's bus keeps.
- ``per_tick``: the same messages, but one frame per tick holding all of them (each message
  packed once), sent to each subscription that wants any of them (addressed to it) and decoded
  once. This is the floor of a bus that batched a tick's messages: a different contract from
  Sunlit's.

No flight logic, no physics, no checks, no hashing: a lower bound for ``sil_day_full_s``, to be
read against ``basilisk_day_s`` in the same bench run. The captured ticks are replayed in a cycle
(seq numbers continuing) until ``replay_ticks`` ticks have run; the figure is their wall time
scaled to a day.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import zmq

from flight.bus import backend_send
from flight.telemetry_store import _SCALAR_TYPES, _table_name, _to_json
from sim.scenario import Scenario, load_scenario
from sim.sil import SilRun

DAY_S = 86_400


@dataclass
class Traffic:
    """What a SIL published, tick by tick, and who subscribed to what."""

    scenario: str
    # Per tick: (topic, source, seq, t_ns, body) in publication order.
    ticks: list[list[tuple[str, str, int, int, dict]]]
    # Per SIL subscription: its ZeroMQ topic filters (topic + NUL, or a prefix).
    filters: dict[str, tuple[bytes, ...]]
    store_subscription: str
    flush_every_ticks: int

    @property
    def messages(self) -> int:
        return sum(map(len, self.ticks))


@dataclass
class FloorTiming:
    mode: str
    replay_ticks: int
    wall_s: float
    frames_sent: int
    frames_received: int
    rows_stored: int

    @property
    def day_s(self) -> float:
        """The replay's wall time scaled to a day of ticks."""
        return self.wall_s / self.replay_ticks * DAY_S

    @property
    def us_per_tick(self) -> float:
        return self.wall_s / self.replay_ticks * 1e6


@dataclass
class TransportFloor:
    scenario: str
    capture_ticks: int
    messages_per_tick: float
    subscriptions: int
    deliveries_per_tick: float  # frames per tick a per-message bus hands to subscriptions
    timings: dict[str, FloorTiming] = field(default_factory=dict)


def capture_traffic(scenario: str | Scenario = "starcloud1", ticks: int = 5_760,
                    run_dir: Path | None = None) -> Traffic:
    """Step a modeled SilRun ``ticks`` times and record every message each tick published.

    The run's files go to ``run_dir`` (kept, e.g. to compare its telemetry.db with a replay's),
    or to a temporary folder."""
    scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    with tempfile.TemporaryDirectory(prefix="sunlit-bench-floor-") as tmp:
        run = SilRun(scenario, Path(run_dir or Path(tmp) / "run"), seed=0, compute="modeled")
        try:
            filters = {name: sub._filters for name, sub in run.bus.subscriptions.items()}
            # What the store takes in each time it runs (every tick, and once more at close): every
            # message of the run after frame zero (which the constructor ran).
            recorded: list[list[tuple[str, str, int, int, dict]]] = [[]]
            run.store._listeners += (lambda messages: recorded[-1].extend(
                (m.topic, m.source, m.seq, m.t_ns, m.body) for m in messages),)
            for _ in range(ticks):
                run.step()
                recorded.append([])
            store_name = run.store._sub.name
            flush_every = run.store._flush_every_ticks
        finally:
            run.close()
        recorded[-2].extend(recorded.pop())  # taken in at close: replayed with the last tick
    return Traffic(scenario=scenario.name, ticks=recorded, filters=filters,
                   store_subscription=store_name, flush_every_ticks=flush_every)


class _Replay:
    """Sockets, prepared messages and an SQLite file for one replay."""

    def __init__(self, traffic: Traffic, db_path: Path, mode: str) -> None:
        if mode not in ("per_message", "per_tick"):
            raise ValueError(f"unknown floor mode {mode!r}")
        self.traffic = traffic
        self.mode = mode
        self.context = zmq.Context()
        self.pub = self.context.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 0)
        endpoint = "inproc://bench-floor"
        self.pub.bind(endpoint)
        names = list(traffic.filters)
        self.subs: list[zmq.Socket] = []
        for index, name in enumerate(names):
            sub = self.context.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, 0)
            # per_tick: a frame addressed to this subscription alone (its index, then NUL).
            own = (_address(index),) if mode == "per_tick" else traffic.filters[name] or (b"",)
            for topic_filter in own:
                sub.setsockopt(zmq.SUBSCRIBE, topic_filter)
            sub.connect(endpoint)
            self.subs.append(sub)
        self.pub.getsockopt(zmq.EVENTS)  # take in the subscriptions before the first send
        self.store_index = names.index(traffic.store_subscription)
        # Per tick: [(frame prefix, (topic, source), seq, t_ns, body)], and per subscription index
        # the messages it wants (what it must read). A stream's seq goes on counting from cycle to
        # cycle: a replayed seq is the captured one plus the stream's messages per cycle times the
        # cycles done.
        self.ticks: list[list[tuple[bytes, tuple[str, str], int, int, dict]]] = []
        self.stream_counts: dict[tuple[str, str], int] = {}
        self.wanted: list[list[tuple[int, list[int]]]] = []
        columns: dict[str, list[str]] = {}
        for messages in traffic.ticks:
            tick = []
            per_sub: dict[int, list[int]] = {}
            for i, (topic, source, seq, t_ns, body) in enumerate(messages):
                prefix = topic.encode() + b"\x00"
                tick.append((prefix, (topic, source), seq, t_ns, body))
                self.stream_counts[topic, source] = self.stream_counts.get((topic, source), 0) + 1
                for s, name in enumerate(names):
                    if any(prefix.startswith(f) for f in traffic.filters[name] or (b"",)):
                        per_sub.setdefault(s, []).append(i)
                known = columns.setdefault(_table_name(topic), [])
                known.extend(k for k in body if k not in known)
            self.ticks.append(tick)
            self.wanted.append(sorted(per_sub.items()))
        self.db = sqlite3.connect(db_path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.columns = columns
        self.insert_sql: dict[str, str] = {}
        for table, cols in columns.items():
            names_sql = ", ".join(["t_ns", "seq", "source", *(f'"{c}"' for c in cols)])
            self.db.execute(f'CREATE TABLE "{table}" ({names_sql})')
            self.insert_sql[table] = f'INSERT INTO "{table}" VALUES ({", ".join("?" * (3 + len(cols)))})'
        self.db.commit()
        self.frames_sent = self.frames_received = self.rows = 0

    def _row(self, table: str, seq: int, t_ns: int, source: str, body: dict) -> tuple:
        values = tuple(map(body.get, self.columns[table]))
        if not _SCALAR_TYPES.issuperset(map(type, values)):
            values = tuple([v if type(v) in _SCALAR_TYPES else _to_json(v) for v in values])
        return (t_ns, seq, source) + values

    def _flush(self, pending: dict[str, list[tuple]]) -> None:
        for table, rows in pending.items():
            if rows:
                self.db.executemany(self.insert_sql[table], rows)
                self.rows += len(rows)
                rows.clear()
        self.db.commit()

    def run(self, n_ticks: int) -> float:
        mode = self.mode
        send = backend_send(self.pub)
        pack = msgpack.Packer(use_bin_type=True).pack
        unpackb = msgpack.unpackb
        recvs = [sub.recv for sub in self.subs]
        store_index = self.store_index
        tables: dict[str, str] = {}
        pending: dict[str, list[tuple]] = {table: [] for table in self.columns}
        offsets: dict[tuple[str, str], int] = {}
        flush_every = self.traffic.flush_every_ticks
        row = self._row
        decoded: dict[bytes, tuple[bytes, list]] = {}
        addresses = [_address(index) for index in range(len(self.subs))]
        sent = received = 0
        t0 = time.perf_counter()
        for tick_index in range(n_ticks):
            cycle = tick_index % len(self.ticks)
            if cycle == 0:
                done = tick_index // len(self.ticks)
                offsets = {key: done * count for key, count in self.stream_counts.items()}
            tick = self.ticks[cycle]
            if mode == "per_message":
                for prefix, key, seq, t_ns, body in tick:
                    send(prefix + pack([seq + offsets[key], t_ns, key[1], body]))
                sent += len(tick)
                for s, wanted in self.wanted[cycle]:
                    recv = recvs[s]
                    for _ in wanted:
                        frame = recv(zmq.NOBLOCK)
                        cut = frame.find(b"\x00")
                        # Decoded once per publish, as Sunlit's bus does: the frames of one
                        # publish are equal bytes, so a later subscription takes the first's result.
                        topic = frame[:cut]
                        last = decoded.get(topic)
                        if last is not None and last[0] == frame:
                            seq, t_ns, source, body = last[1]
                        else:
                            fields = unpackb(frame[cut + 1:], strict_map_key=False)
                            decoded[topic] = (frame, fields)
                            seq, t_ns, source, body = fields
                        if s == store_index:
                            table = tables.get(topic)
                            if table is None:
                                table = tables[topic] = _table_name(topic.decode())
                            pending[table].append(row(table, seq, t_ns, source, body))
                    received += len(wanted)
            else:  # per_tick: each message packed once, one frame per subscription that wants any
                packed = []
                for _, key, seq, t_ns, body in tick:
                    packed.append(pack([key[0], seq + offsets[key], t_ns, key[1], body]))
                payload = _array_header(len(packed)) + b"".join(packed)
                wanted_now = self.wanted[cycle]
                for s, _ in wanted_now:
                    send(addresses[s] + payload)
                sent += len(wanted_now)
                messages = None
                for s, _ in wanted_now:
                    frame = recvs[s](zmq.NOBLOCK)
                    received += 1
                    if messages is None:  # decoded once, by the first subscription that reads it
                        messages = unpackb(frame[frame.find(b"\x00") + 1:], strict_map_key=False)
                    if s == store_index:
                        for topic, seq, t_ns, source, body in messages:
                            table = tables.get(topic)
                            if table is None:
                                table = tables[topic] = _table_name(topic)
                            pending[table].append(row(table, seq, t_ns, source, body))
            if (tick_index + 1) % flush_every == 0:
                self._flush(pending)
        self._flush(pending)
        wall_s = time.perf_counter() - t0
        self.frames_sent += sent
        self.frames_received += received
        return wall_s

    def close(self) -> None:
        self.db.close()
        for sub in self.subs:
            sub.close(linger=0)
        self.pub.close(linger=0)
        self.context.term()


def _address(index: int) -> bytes:
    """A per_tick frame's prefix for subscription ``index``: no topic is a number."""
    return b"%d\x00" % index


def _array_header(n: int) -> bytes:
    """msgpack's array header for ``n`` items (the items follow, already packed)."""
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def measure_transport_floor(scenario: str | Scenario = "starcloud1", capture_ticks: int = 5_760,
                            replay_ticks: int = DAY_S,
                            modes: tuple[str, ...] = ("per_message", "per_tick")) -> TransportFloor:
    """Capture the SIL's traffic, then time each replay mode over ``replay_ticks`` ticks."""
    traffic = capture_traffic(scenario, capture_ticks)
    per_tick = max(1, len(traffic.ticks))
    result = TransportFloor(
        scenario=traffic.scenario, capture_ticks=len(traffic.ticks),
        messages_per_tick=traffic.messages / per_tick, subscriptions=len(traffic.filters),
        deliveries_per_tick=0.0,
    )
    with tempfile.TemporaryDirectory(prefix="sunlit-bench-floor-") as tmp:
        for mode in modes:
            replay = _Replay(traffic, Path(tmp) / f"{mode}.db", mode)
            try:
                result.deliveries_per_tick = sum(len(w) for tick in replay.wanted for _, w in tick) / per_tick
                wall_s = replay.run(replay_ticks)
                result.timings[mode] = FloorTiming(mode, replay_ticks, wall_s, replay.frames_sent,
                                                   replay.frames_received, replay.rows)
            finally:
                replay.close()
    return result
