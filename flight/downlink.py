"""Store-and-forward downlink: telemetry and events kept on board in SQLite until the ground has them.

Every message on the downlinked topics (``evt.``, ``tlm.``, ``rsp.``) is appended, as its exact bus
frame, to a queue table with a priority: 0 events (and command responses: an operator waits for
them, and they are few), 1 housekeeping, 2 bulk; by default the class is the dictionary's
``downlink`` of the topic's component (flight.dictionary.Dictionary.downlink_class).

While the radio (``tlm.radio``) reports a station in view, frames go down in (priority, id)
order, never faster than the radio's rate: airtime is granted as ``rate * elapsed / 8`` bytes for
each interval that starts and ends in contact, its unused remainder carried while frames wait for
it, and a frame is sent only when the grant covers it (so the bytes sent in a pass never exceed
rate x time in contact). Frames go in batches through a transport; the ground acknowledges the
frame ids it has durably archived, and only then are the rows deleted. Frames not acknowledged
within ``ack_timeout_s`` of mission time are sent again.

Durability, and why nothing acknowledged is ever lost:
- A frame is committed before it is ever sent, and a row is deleted only on an acknowledgement
  naming this store (``store_id``) and the frame's id: the ground archived it first.
- Frame ids are never reused (a high-water mark is kept in the database, written in the same
  transaction that deletes rows), so the ground's (store_id, id) key always means one frame.
- What is in flight is kept in memory only: after a restart every unacknowledged frame counts as
  unsent and goes down again; the ground ignores the duplicates (INSERT OR IGNORE) and acks them.
- SQLite runs in WAL mode. ``synchronous=NORMAL`` between passes (a commit is atomic and survives
  a process kill; only a power loss can undo the last commits, losing telemetry that was never
  sent or acknowledged anyway), ``FULL`` while in contact (each commit is fsynced before any frame
  it holds is sent, so a power loss can never make the store forget an id the ground has seen, nor
  resurrect much of what was acknowledged), and ``FULL`` for the one commit at open. A simulation,
  which has no power to lose, may set ``fsync_in_contact=False``: a process kill still loses
  nothing acknowledged.

Decimation (optional, per class): housekeeping and bulk topics may go down at most one frame per
``housekeeping_period_s`` / ``bulk_period_s`` of mission time (the onboard telemetry store keeps the
full rate); events and command responses always go down whole. Frames left out are counted.

Bounded: past ``max_queue_bytes`` the oldest frames of the lowest priority are evicted first (bulk,
then housekeeping, then events), counted per priority and reported by a throttled event: never a
silent loss.

Flight code: only mission time from the tick context, no wall clock and no randomness.
"""

from __future__ import annotations

import math
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
import zmq

from flight.bus import Bus, Message
from flight.events import EventReporter
from flight.rate_group import TickContext

if TYPE_CHECKING:
    from flight.dictionary import Dictionary

__all__ = [
    "DEFAULT_HOUSEKEEPING_TOPICS",
    "PRIORITIES",
    "PRIORITY_BULK",
    "PRIORITY_EVENT",
    "PRIORITY_HOUSEKEEPING",
    "PRIORITY_NAMES",
    "Downlink",
    "DownlinkConfig",
    "DownlinkStoreError",
    "DownlinkTransport",
    "LoopbackTransport",
    "ZmqDownlinkTransport",
    "default_priority_of",
    "dictionary_priority_of",
    "make_priority_of",
]

PRIORITY_EVENT = 0
PRIORITY_HOUSEKEEPING = 1
PRIORITY_BULK = 2
PRIORITIES = (PRIORITY_EVENT, PRIORITY_HOUSEKEEPING, PRIORITY_BULK)
PRIORITY_NAMES = ("events", "housekeeping", "bulk")

# For make_priority_of: the state of the platform an operator looks at first after acquisition.
DEFAULT_HOUSEKEEPING_TOPICS = frozenset({
    "tlm.eps", "tlm.power", "tlm.thermal", "tlm.gpu", "tlm.modes", "tlm.scheduler", "tlm.bus",
    "tlm.radio", "tlm.downlink",
})
_CLASS_PRIORITY = {"event": PRIORITY_EVENT, "housekeeping": PRIORITY_HOUSEKEEPING, "bulk": PRIORITY_BULK}

_FORMAT_VERSION = 1
_NS_PER_S = 1_000_000_000
_FETCH_ROWS = 64  # rows read per query while filling a tick's airtime
_SQL_PARAMS = 500  # ids per IN (...) list: well under SQLite's parameter limit
_REJECTIONS_KEPT = 32


class DownlinkStoreError(RuntimeError):
    """The onboard store file cannot be used (corrupt, not a database, a newer format)."""


def make_priority_of(housekeeping_topics: Iterable[str] = DEFAULT_HOUSEKEEPING_TOPICS) -> Callable[[str], int]:
    """``evt.*`` and ``rsp.*`` -> 0, the housekeeping topics -> 1, anything else -> 2 (bulk)."""
    housekeeping = frozenset(housekeeping_topics)

    def priority_of(topic: str) -> int:
        if topic.startswith(("evt.", "rsp.")):
            return PRIORITY_EVENT
        if topic in housekeeping:
            return PRIORITY_HOUSEKEEPING
        return PRIORITY_BULK

    return priority_of


def dictionary_priority_of(dictionary: Dictionary | None = None) -> Callable[[str], int]:
    """Priorities from the dictionary: events and responses 0, then each component's declared
    ``downlink`` class (housekeeping 1, bulk 2); topics of undeclared components are bulk."""
    from flight.dictionary import default_dictionary

    classes = dictionary if dictionary is not None else default_dictionary()

    def priority_of(topic: str) -> int:
        return _CLASS_PRIORITY[classes.downlink_class(topic)]

    return priority_of


def default_priority_of(topic: str) -> int:
    """The packaged dictionary's priority of ``topic`` (see dictionary_priority_of)."""
    return dictionary_priority_of()(topic)


class DownlinkTransport(Protocol):
    """The link to the ground; both calls return at once (never block a tick)."""

    def send(self, batch: dict) -> None:
        """Queue ``{"type": "batch", "store_id", "batch_id", "frames": [[id, frame], ...]}`` for the ground."""

    def receive_acks(self) -> list[dict]:
        """Acknowledgements that have arrived: ``{"type": "ack", "store_id", "ids": [...]}``."""


@dataclass(frozen=True)
class DownlinkConfig:
    # Names the store: store_id = "<store_name>-<mission ns at creation>", fixed at creation.
    store_name: str = "sunlit"
    # ~1.7 days of the SIL's ~1.8 kB/s of telemetry: a day without contact loses nothing.
    max_queue_bytes: int = 256 * 1024 * 1024
    # Mission seconds to wait for an ack before sending a frame again: a few round trips.
    ack_timeout_s: float = 30.0
    batch_max_bytes: int = 64 * 1024
    # Charged per frame against the airtime on top of its bytes: the msgpack [id, bin] wrapper
    # (<= 15 bytes) rounded up; batch headers are a few tens of bytes per 64 KiB and not charged.
    frame_overhead_bytes: int = 16
    telemetry_period_s: float = 10.0
    event_interval_s: float = 600.0  # repeated warnings (evictions, bad acks): one per interval
    # Out of contact, commit queued frames at most this often (0: every tick). Uncommitted frames
    # are lost if the process dies, but they were never sent, let alone acknowledged; in contact
    # and on acks the store always commits before sending.
    commit_interval_s: float = 0.0
    # synchronous=FULL while in contact (one fsync per tick in a pass); see the module docstring.
    fsync_in_contact: bool = True
    radio_topic: str = "tlm.radio"
    radio_max_age_s: float = 10.0  # an older radio sample means "not in contact"
    topics: tuple[str, ...] = ("evt.", "tlm.", "rsp.")
    subscription_hwm: int = 100_000
    # At most one frame per topic per period, on multiples of the period since the epoch (0: every
    # frame). Events and command responses are never decimated.
    housekeeping_period_s: float = 0.0
    bulk_period_s: float = 0.0

    def __post_init__(self) -> None:
        if type(self.fsync_in_contact) is not bool:
            raise ValueError(f"DownlinkConfig.fsync_in_contact must be a bool, got {self.fsync_in_contact!r}")
        if type(self.store_name) is not str or not self.store_name:
            raise ValueError(f"DownlinkConfig.store_name must be a non-empty str, got {self.store_name!r}")
        for key in ("max_queue_bytes", "batch_max_bytes", "subscription_hwm"):
            value = getattr(self, key)
            if type(value) is not int or value < 1:
                raise ValueError(f"DownlinkConfig.{key} must be an int >= 1, got {value!r}")
        if type(self.frame_overhead_bytes) is not int or self.frame_overhead_bytes < 0:
            raise ValueError("DownlinkConfig.frame_overhead_bytes must be an int >= 0, "
                             f"got {self.frame_overhead_bytes!r}")
        for key in ("ack_timeout_s", "telemetry_period_s", "event_interval_s", "commit_interval_s", "radio_max_age_s",
                    "housekeeping_period_s", "bulk_period_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"DownlinkConfig.{key} must be a finite number >= 0, got {value!r}")
        if not self.ack_timeout_s > 0:
            raise ValueError(f"DownlinkConfig.ack_timeout_s must be > 0, got {self.ack_timeout_s!r}")


class _Throttle:
    """At most one event per interval of mission time; what was held back is counted."""

    def __init__(self, interval_ns: int) -> None:
        self.interval_ns = interval_ns
        self.next_ns: int | None = None
        self.held = 0

    def admit(self, t_ns: int) -> bool:
        if self.next_ns is not None and t_ns < self.next_ns:
            self.held += 1
            return False
        self.next_ns = t_ns + self.interval_ns
        return True


class Downlink:
    """The onboard store-and-forward app. ``run(ctx)`` once per tick, after everything it should
    catch this tick has been published (it drains its subscription each run)."""

    def __init__(self, bus: Bus, path: str | Path, priority_of: Callable[[str], int] | None,
                 transport: DownlinkTransport, config: DownlinkConfig | None = None, *,
                 created_t_ns: int = 0, dictionary: Dictionary | None = None, fed: bool = False) -> None:
        """``priority_of`` None: the dictionary's classes (dictionary_priority_of). ``created_t_ns``
        names a new store (``store_id``); an existing file keeps its own. ``dictionary`` declares
        the events (default: the packaged one)."""
        self.config = config = config or DownlinkConfig()
        self.path = Path(path)
        self._priority_of = priority_of or dictionary_priority_of(dictionary)
        self._priorities: dict[str, int] = {}
        self._transport = transport
        self._overhead = config.frame_overhead_bytes
        self._ack_timeout_ns = round(config.ack_timeout_s * _NS_PER_S)
        self._tlm_period_ns = round(config.telemetry_period_s * _NS_PER_S)
        self._commit_interval_ns = round(config.commit_interval_s * _NS_PER_S)
        self._radio_max_age_ns = round(config.radio_max_age_s * _NS_PER_S)
        self._radio_topic = config.radio_topic
        self._decimation_ns = (0, round(config.housekeeping_period_s * _NS_PER_S),
                               round(config.bulk_period_s * _NS_PER_S))
        self._due_ns: dict[str, int] = {}  # decimated topic -> earliest t_ns of its next frame
        self._open(created_t_ns)

        # Fed (``fed=True``): the wiring hands it the messages another subscriber already decoded
        # (the telemetry store, which takes everything), through ``feed``; saves decoding every
        # frame twice. Otherwise it has its own subscription.
        self._sub = None if fed else bus.subscribe(list(config.topics), hwm=config.subscription_hwm, name="downlink")
        self._fed: list[Message] = []
        self._fed_prefixes = tuple(config.topics)
        self._fed_radio: Message | None = None
        self._pub = bus.publisher("downlink")
        self._events = EventReporter(bus, "downlink", dictionary)
        interval_ns = round(config.event_interval_s * _NS_PER_S)
        self._throttles = {name: _Throttle(interval_ns) for name in ("evicted", "malformed_ack", "transport")}

        # In-flight state lives in memory only (see the module docstring).
        self._cursor = {p: 0 for p in PRIORITIES}  # highest id of each priority sent this session
        self._resend: dict[int, list[int]] = {p: [] for p in PRIORITIES}  # timed-out ids, ascending
        self._in_flight: dict[int, int] = {}  # id -> priority
        self._sent_log: deque[tuple[int, list[int]]] = deque()  # (sent at t_ns, ids), in send order
        self._batch_seq = 0
        self._allowance_bytes = 0.0
        self._in_contact = False
        self._station = ""
        self._rate_bps = 0.0
        self._last_t_ns: int | None = None
        self._next_tlm_ns: int | None = None
        self._next_commit_ns = 0
        self._dirty = False
        self._pass: dict[str, Any] = {}
        self._rejections: deque[str] = deque(maxlen=_REJECTIONS_KEPT)

        self.sent_frames = 0
        self.sent_bytes = 0  # charged bytes: frames plus per-frame overhead
        self.batches_sent = 0
        self.acked_frames = 0
        self.resent_frames = 0
        self.evicted_frames = [0, 0, 0]
        self.evicted_bytes = 0
        self.decimated_frames = 0
        self.malformed_acks = 0
        self.malformed_radio = 0
        self.transport_errors = 0
        self.passes = 0

    # -- the store ------------------------------------------------------------------------------

    def _open(self, created_t_ns: int) -> None:
        db = None
        try:
            db = sqlite3.connect(self.path)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise DownlinkStoreError(f"downlink store {self.path}: journal_mode is {mode!r}, WAL is required")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)")
            db.execute("CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY, priority INTEGER NOT NULL,"
                       " topic TEXT NOT NULL, t_ns INTEGER NOT NULL, size INTEGER NOT NULL, frame BLOB NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS queue_priority_id ON queue (priority, id)")
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            version = meta.get("format", _FORMAT_VERSION)
            if version != _FORMAT_VERSION:
                raise DownlinkStoreError(f"downlink store {self.path}: format {version!r}, this code reads "
                                         f"{_FORMAT_VERSION}")
            store_id = meta.get("store_id")
            if store_id is None:
                store_id = f"{self.config.store_name}-{int(created_t_ns)}"
            elif type(store_id) is not str or not store_id:
                raise DownlinkStoreError(f"downlink store {self.path}: meta store_id is {store_id!r}")
            top = db.execute("SELECT MAX(id) FROM queue").fetchone()[0] or 0
            next_id = max(int(meta.get("next_id", 1)), top + 1)
            boots = int(meta.get("boots", 0)) + 1
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("format", _FORMAT_VERSION), ("store_id", store_id), ("next_id", next_id), ("boots", boots)])
            db.commit()
            db.execute("PRAGMA synchronous=NORMAL")
            counts = db.execute("SELECT priority, COUNT(*), TOTAL(size) FROM queue GROUP BY priority").fetchall()
        except (sqlite3.Error, ValueError, TypeError, DownlinkStoreError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, DownlinkStoreError):
                raise
            raise DownlinkStoreError(f"downlink store {self.path}: {type(exc).__name__}: {exc}") from exc
        self._db = db
        # Frames queued but not inserted yet: they are inserted in one statement at the next commit
        # or query (~7 us a tick less than an insert per tick). Until the commit they would be lost
        # to a kill either way; they were never sent.
        self._unwritten: list[tuple[int, int, str, int, int, bytes]] = []
        self.store_id: str = store_id
        self.boots = boots
        self._next_id = next_id
        self._stored_next_id = next_id
        self._queued_frames = [0, 0, 0]
        self._queued_bytes = [0, 0, 0]
        for priority, frames, size in counts:
            p = priority if priority in PRIORITIES else PRIORITY_BULK
            self._queued_frames[p] += frames
            self._queued_bytes[p] += int(size)

    def _write_queued(self) -> None:
        """Insert the frames queued since the last write (before any query of the queue table)."""
        if self._unwritten:
            self._db.executemany("INSERT INTO queue VALUES (?, ?, ?, ?, ?, ?)", self._unwritten)
            self._unwritten = []

    def _commit(self) -> None:
        self._write_queued()
        self._db.commit()
        self._dirty = False

    def _keep_id_high_water(self) -> None:
        """Before rows are deleted: store the next id, so that an emptied queue never reuses one."""
        if self._stored_next_id != self._next_id:
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_id'", (self._next_id,))
            self._stored_next_id = self._next_id

    # -- per tick -------------------------------------------------------------------------------

    def run(self, ctx: TickContext) -> None:
        t_ns = ctx.t_ns
        if self._sub is not None:
            messages = self._sub.drain()
        else:
            messages, self._fed = self._fed, []
        if messages:
            self._enqueue(messages, t_ns)
        self._receive_acks(t_ns)
        if self._sent_log and self._sent_log[0][0] <= t_ns - self._ack_timeout_ns:
            self._expire(t_ns - self._ack_timeout_ns)
        in_contact, rate_bps, station = self._radio(t_ns)
        # Airtime for the interval since the last run, if it began and ended in contact.
        if in_contact and self._in_contact and self._last_t_ns is not None and t_ns > self._last_t_ns:
            self._allowance_bytes += self._rate_bps * (t_ns - self._last_t_ns) / (8 * _NS_PER_S)
        changed = in_contact != self._in_contact
        if changed:
            if self._dirty:
                self._commit()
            self._contact_changed(in_contact, station, t_ns)
        if self._dirty and (in_contact or t_ns >= self._next_commit_ns):
            self._commit()
            self._next_commit_ns = t_ns + self._commit_interval_ns
        self._station, self._rate_bps = station, rate_bps
        if in_contact:
            self._send(t_ns)
        self._last_t_ns = t_ns
        if changed or self._next_tlm_ns is None or t_ns >= self._next_tlm_ns:
            self._publish_telemetry()
            self._next_tlm_ns = t_ns + self._tlm_period_ns

    def _enqueue(self, messages: list[Message], t_ns: int) -> None:
        priorities = self._priorities
        queued_frames, queued_bytes = self._queued_frames, self._queued_bytes
        period_ns, due_ns = self._decimation_ns, self._due_ns
        next_id = self._next_id
        rows = []
        for m in messages:
            topic = m.topic
            p = priorities.get(topic)
            if p is None:
                p = priorities[topic] = self._checked_priority(topic)
            period = period_ns[p]
            if period:
                if m.t_ns < due_ns.get(topic, 0):
                    self.decimated_frames += 1
                    continue
                due_ns[topic] = (m.t_ns // period + 1) * period
            raw = m.raw
            size = len(raw)
            rows.append((next_id, p, topic, m.t_ns, size, raw))
            next_id += 1
            queued_frames[p] += 1
            queued_bytes[p] += size
        if not rows:
            return
        self._unwritten += rows
        self._next_id = next_id
        self._dirty = True
        if sum(queued_bytes) > self.config.max_queue_bytes:
            self._evict(t_ns)

    def _checked_priority(self, topic: str) -> int:
        try:
            p = self._priority_of(topic)
        except Exception as exc:  # a bad rule must not stop the store: bulk, and say so
            self._rejections.append(f"priority_of({topic!r}) raised {type(exc).__name__}: {exc}")
            return PRIORITY_BULK
        if p not in PRIORITIES or type(p) is not int:
            self._rejections.append(f"priority_of({topic!r}) returned {p!r}, not one of {PRIORITIES}; using bulk")
            return PRIORITY_BULK
        return p

    def _evict(self, t_ns: int) -> None:
        """Delete the oldest frames of the lowest priority until the queue fits its bound."""
        excess = sum(self._queued_bytes) - self.config.max_queue_bytes
        self._write_queued()
        self._keep_id_high_water()
        evicted_now = 0
        for p in reversed(PRIORITIES):
            while excess > 0 and self._queued_frames[p] > 0:
                rows = self._db.execute("SELECT id, size FROM queue WHERE priority = ? ORDER BY id LIMIT 256",
                                        (p,)).fetchall()
                if not rows:
                    break
                freed = count = last = 0
                for last, size in rows:
                    count += 1
                    freed += size
                    if freed >= excess:
                        break
                self._db.execute("DELETE FROM queue WHERE priority = ? AND id <= ?", (p, last))
                self._queued_frames[p] -= count
                self._queued_bytes[p] -= freed
                self.evicted_frames[p] += count
                self.evicted_bytes += freed
                evicted_now += count
                excess -= freed
                if self._in_flight:
                    for i in [i for i, q in self._in_flight.items() if q == p and i <= last]:
                        del self._in_flight[i]
        if evicted_now and self._throttles["evicted"].admit(t_ns):
            self._events.emit(
                "WARNING_HI", "QUEUE_EVICTED",
                f"downlink queue over {self.config.max_queue_bytes} bytes: evicted {evicted_now} frames now, "
                f"{sum(self.evicted_frames)} in all (events {self.evicted_frames[0]}, housekeeping "
                f"{self.evicted_frames[1]}, bulk {self.evicted_frames[2]})",
                evicted_frames=sum(self.evicted_frames), evicted_bytes=self.evicted_bytes)

    def _receive_acks(self, t_ns: int) -> None:
        try:
            acks = self._transport.receive_acks()
        except Exception as exc:  # the link is not allowed to stop the flight software
            self._transport_error("receive_acks", exc, t_ns)
            return
        if not acks:
            return
        ids: list[int] = []
        for ack in acks:
            reason = self._check_ack(ack)
            if reason is not None:
                self.malformed_acks += 1
                self._rejections.append(reason)
                if self._throttles["malformed_ack"].admit(t_ns):
                    self._events.emit("WARNING_LO", "ACK_REJECTED", f"ack rejected: {reason}",
                                      malformed_acks=self.malformed_acks)
                continue
            ids.extend(ack["ids"])
        if ids:
            self._delete_acked(ids)

    def _check_ack(self, ack: Any) -> str | None:
        if type(ack) is not dict:
            return f"ack must be a map, got {type(ack).__name__}"
        if ack.get("type") != "ack":
            return f"ack type must be 'ack', got {ack.get('type')!r}"
        if ack.get("store_id") != self.store_id:
            return f"ack for store {ack.get('store_id')!r}, this store is {self.store_id!r}"
        ids = ack.get("ids")
        if type(ids) is not list:
            return f"ack ids must be a list, got {type(ids).__name__}"
        for i in ids:
            if type(i) is not int or not 1 <= i < self._next_id:
                return f"ack id {i!r} is not an id this store has issued (1..{self._next_id - 1})"
        return None

    def _delete_acked(self, ids: list[int]) -> None:
        self._write_queued()
        self._keep_id_high_water()
        unique = sorted(set(ids))
        acked = 0
        for start in range(0, len(unique), _SQL_PARAMS):
            chunk = unique[start:start + _SQL_PARAMS]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"DELETE FROM queue WHERE id IN ({marks}) RETURNING priority, size",
                                    chunk).fetchall()
            for priority, size in rows:
                p = priority if priority in PRIORITIES else PRIORITY_BULK
                self._queued_frames[p] -= 1
                self._queued_bytes[p] -= size
            acked += len(rows)
        in_flight = self._in_flight
        for i in unique:
            in_flight.pop(i, None)
        self.acked_frames += acked
        if self._pass:
            self._pass["acked_frames"] += acked
        self._dirty = True
        self._commit()  # the ground has these: forget them now, not at the next commit interval

    def _expire(self, deadline_ns: int) -> None:
        """Frames sent at or before deadline_ns and still unacknowledged go back to be resent."""
        log, in_flight, resend = self._sent_log, self._in_flight, self._resend
        touched = set()
        while log and log[0][0] <= deadline_ns:
            for i in log.popleft()[1]:
                p = in_flight.pop(i, None)
                if p is not None:
                    resend[p].append(i)
                    touched.add(p)
        for p in touched:
            resend[p].sort()

    def feed(self, messages: list[Message]) -> None:
        """Take messages decoded by another subscriber (``fed=True``); ``run`` queues them."""
        prefixes = self._fed_prefixes
        radio_topic = self._radio_topic
        for m in messages:
            topic = m.topic
            if topic.startswith(prefixes):
                self._fed.append(m)
                if topic == radio_topic:
                    self._fed_radio = m

    def _radio(self, t_ns: int) -> tuple[bool, float, str]:
        message = self._sub.latest(self._radio_topic) if self._sub is not None else self._fed_radio
        if message is None or t_ns - message.t_ns > self._radio_max_age_ns:
            return False, 0.0, ""
        body = message.body
        if body.get("in_contact") is not True:
            return False, 0.0, ""
        rate = body.get("downlink_rate_bps")
        station = body.get("station")
        if type(rate) not in (int, float) or not math.isfinite(rate) or rate <= 0 or type(station) is not str:
            self.malformed_radio += 1
            return False, 0.0, ""
        return True, float(rate), station

    def _contact_changed(self, in_contact: bool, station: str, t_ns: int) -> None:
        self._in_contact = in_contact
        self._allowance_bytes = 0.0  # airtime is not banked between passes
        if in_contact:
            self.passes += 1
            if self.config.fsync_in_contact:
                self._db.execute("PRAGMA synchronous=FULL")
            self._pass = {"station": station, "start_t_ns": t_ns, "sent_frames": 0, "sent_bytes": 0,
                          "acked_frames": 0}
            self._events.emit(
                "ACTIVITY_HI", "PASS_STARTED",
                f"downlink pass {self.passes} started over {station or '?'}: {self.queued_frames} frames, "
                f"{self.queued_bytes} bytes queued", station=station, queued_frames=self.queued_frames,
                queued_bytes=self.queued_bytes)
        else:
            self._db.execute("PRAGMA synchronous=NORMAL")
            p = self._pass
            self._pass = {}
            if p:
                duration_s = (t_ns - p["start_t_ns"]) / _NS_PER_S
                self._events.emit(
                    "ACTIVITY_HI", "PASS_ENDED",
                    f"downlink pass {self.passes} over {p['station'] or '?'} ended after {duration_s:.0f} s: "
                    f"sent {p['sent_frames']} frames ({p['sent_bytes']} bytes), {p['acked_frames']} acknowledged, "
                    f"{self.queued_frames} frames still queued",
                    station=p["station"], duration_s=duration_s, sent_frames=p["sent_frames"],
                    sent_bytes=p["sent_bytes"], acked_frames=p["acked_frames"], queued_frames=self.queued_frames)

    def _send(self, t_ns: int) -> None:
        budget = self._allowance_bytes
        overhead = self._overhead
        self._write_queued()
        db = self._db
        chosen: list[tuple[int, bytes, int, int]] = []  # (id, frame, priority, charged bytes)
        blocked = False  # the next frame in order does not fit the airtime left
        resent = 0
        for p in PRIORITIES:
            # Timed-out frames have lower ids than any unsent one of their priority: they go first.
            resend = self._resend[p]
            while resend and not blocked:
                ids = resend[:_FETCH_ROWS]
                marks = ",".join("?" * len(ids))
                frames = dict(db.execute(f"SELECT id, frame FROM queue WHERE id IN ({marks})", ids).fetchall())
                used = 0
                for i in ids:
                    frame = frames.get(i)
                    if frame is not None:  # else acknowledged late, or evicted
                        cost = len(frame) + overhead
                        if cost > budget:
                            blocked = True
                            break
                        budget -= cost
                        chosen.append((i, frame, p, cost))
                        resent += 1
                    used += 1
                del resend[:used]
            while not blocked:
                rows = db.execute("SELECT id, frame FROM queue WHERE priority = ? AND id > ? ORDER BY id LIMIT ?",
                                  (p, self._cursor[p], _FETCH_ROWS)).fetchall()
                for i, frame in rows:
                    cost = len(frame) + overhead
                    if cost > budget:
                        blocked = True
                        break
                    budget -= cost
                    chosen.append((i, frame, p, cost))
                    self._cursor[p] = i
                if len(rows) < _FETCH_ROWS:
                    break
            if blocked:
                break
        # Carry what is left only while a frame waits for it: an idle link banks no airtime.
        self._allowance_bytes = budget if blocked else 0.0
        if chosen:
            self.resent_frames += resent
            self._ship(chosen, t_ns)

    def _ship(self, chosen: list[tuple[int, bytes, int, int]], t_ns: int) -> None:
        limit = self.config.batch_max_bytes
        start = 0
        while start < len(chosen):
            end, size = start, 0
            while end < len(chosen) and (end == start or size + chosen[end][3] <= limit):
                size += chosen[end][3]
                end += 1
            part = chosen[start:end]
            self._batch_seq += 1
            # Unique per store: the boot count in the high bits, a per-boot counter below.
            batch = {"type": "batch", "store_id": self.store_id, "batch_id": (self.boots << 32) | self._batch_seq,
                     "frames": [[i, frame] for i, frame, _, _ in part]}
            try:
                self._transport.send(batch)
            except Exception as exc:  # counted; the frames count as in flight and time out
                self._transport_error("send", exc, t_ns)
            ids = [i for i, _, _, _ in part]
            for i, _, p, _ in part:
                self._in_flight[i] = p
            self._sent_log.append((t_ns, ids))
            self.batches_sent += 1
            self.sent_frames += len(part)
            self.sent_bytes += size
            if self._pass:
                self._pass["sent_frames"] += len(part)
                self._pass["sent_bytes"] += size
            start = end

    def _transport_error(self, what: str, exc: Exception, t_ns: int) -> None:
        self.transport_errors += 1
        reason = f"transport.{what} raised {type(exc).__name__}: {exc}"
        self._rejections.append(reason)
        if self._throttles["transport"].admit(t_ns):
            self._events.emit("WARNING_HI", "TRANSPORT_ERROR", reason, transport_errors=self.transport_errors)

    # -- telemetry ------------------------------------------------------------------------------

    @property
    def queued_frames(self) -> int:
        return sum(self._queued_frames)

    @property
    def queued_bytes(self) -> int:
        return sum(self._queued_bytes)

    @property
    def in_flight_frames(self) -> int:
        return len(self._in_flight)

    @property
    def in_contact(self) -> bool:
        return self._in_contact

    @property
    def rejections(self) -> list[str]:
        """The last few reasons something was rejected (acks, priorities, transport), oldest first."""
        return list(self._rejections)

    def telemetry(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "in_contact": self._in_contact,
            "station": self._station if self._in_contact else "",
            "queued_frames": self.queued_frames,
            "queued_bytes": self.queued_bytes,
        }
        for p, name in zip(PRIORITIES, PRIORITY_NAMES):
            body[f"queued_frames_{name}"] = self._queued_frames[p]
            body[f"queued_bytes_{name}"] = self._queued_bytes[p]
        body.update({
            "in_flight_frames": len(self._in_flight),
            "sent_frames": self.sent_frames,
            "sent_bytes": self.sent_bytes,
            "batches_sent": self.batches_sent,
            "acked_frames": self.acked_frames,
            "resent_frames": self.resent_frames,
            "evicted_frames": sum(self.evicted_frames),
            "evicted_bytes": self.evicted_bytes,
            "decimated_frames": self.decimated_frames,
        })
        for p, name in zip(PRIORITIES, PRIORITY_NAMES):
            body[f"evicted_frames_{name}"] = self.evicted_frames[p]
        body.update({
            "malformed_acks": self.malformed_acks + int(getattr(self._transport, "malformed", 0)),
            "malformed_radio": self.malformed_radio,
            "transport_errors": self.transport_errors,
            "passes": self.passes,
            "pass_sent_bytes": self._pass.get("sent_bytes", 0),
            "boots": self.boots,
        })
        return body

    def _publish_telemetry(self) -> None:
        self._pub.publish("tlm.downlink", self.telemetry())

    def close(self) -> None:
        """Commit and close the store (an orderly shutdown; a kill loses nothing acknowledged either)."""
        if self._db is None:
            return
        try:
            self._commit()
        finally:
            self._db.close()
            self._db = None  # type: ignore[assignment]
            if self._sub is not None:
                self._sub.close()


# --------------------------------------------------------------------------- transports


class LoopbackTransport:
    """In memory: for tests and the SIL. ``ground(batch) -> ack | None`` (e.g. GroundArchive.
    receive_batch) is called on each send; its acks come back on the next ``receive_acks``.
    ``history`` batches are kept in ``batches`` (None: all, 0: none)."""

    def __init__(self, ground: Callable[[dict], dict | None] | None = None, history: int | None = None) -> None:
        self.ground = ground
        self.batches: deque[dict] = deque(maxlen=history)
        self._acks: deque[Any] = deque()
        self.sent_batches = 0

    def send(self, batch: dict) -> None:
        self.sent_batches += 1
        if self.batches.maxlen != 0:
            self.batches.append(batch)
        if self.ground is not None:
            ack = self.ground(batch)
            if ack is not None:
                self._acks.append(ack)

    def push_ack(self, ack: Any) -> None:
        """Deliver an acknowledgement (or anything else, to test rejection) on the next receive."""
        self._acks.append(ack)

    def receive_acks(self) -> list[Any]:
        acks = list(self._acks)
        self._acks.clear()
        return acks


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


class ZmqDownlinkTransport:
    """The downlink over ZeroMQ: msgpack batches out, msgpack acks in, never blocking.

    The stack side binds a ROUTER; the ground connects a DEALER and says ``{"type": "hello"}``
    on connecting (and now and then). ROUTER because the stack then sends each batch to one
    ground peer it has heard from (the last one), with ROUTER_MANDATORY so an absent peer is an
    error we count rather than a silent drop; a DEALER would round-robin batches over every
    connected peer (a second ground tool would get half of them) and queue them for peers that
    may be gone. A DEALER or PAIR socket is also accepted and simply sends to its peer.
    Security (CURVE) is the wiring's to set on the socket before it binds. An ack deletes data on
    board, so with ``authorized(user_id)`` given, only peers it accepts (by the User-Id the ZAP
    authenticator put on their frames: the client's name) are heard; others are counted in
    ``unauthorized`` and never become the ground peer.
    """

    def __init__(self, socket: zmq.Socket, max_receive_per_call: int = 1000,
                 authorized: Callable[[str], bool] | None = None) -> None:
        self._socket = socket
        self._authorized = authorized
        self.unauthorized = 0
        self._router = socket.type == zmq.ROUTER
        if self._router:
            socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._peer: bytes | None = None
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._max_receive = max_receive_per_call
        self.sent_batches = 0
        self.send_failures = 0  # no peer yet, peer gone, or its queue full: the frames time out
        self.hellos = 0
        self.malformed = 0  # undecodable messages from the ground
        self.rejections: deque[str] = deque(maxlen=_REJECTIONS_KEPT)

    @property
    def peer(self) -> bytes | None:
        return self._peer

    def send(self, batch: dict) -> None:
        data = self._pack(batch)
        try:
            if self._router:
                if self._peer is None:
                    self.send_failures += 1
                    self.rejections.append("no ground peer has said hello yet")
                    return
                self._socket.send_multipart([self._peer, data], zmq.NOBLOCK)
            else:
                self._socket.send(data, zmq.NOBLOCK)
        except zmq.Again:
            self.send_failures += 1
            self.rejections.append("ground peer's queue is full")
            return
        except zmq.ZMQError as exc:
            self.send_failures += 1
            self.rejections.append(f"send failed: {exc}")
            if exc.errno == zmq.EHOSTUNREACH:
                self._peer = None  # gone: wait for the next hello
            return
        self.sent_batches += 1

    def receive_acks(self) -> list[dict]:
        out: list[dict] = []
        socket = self._socket
        for _ in range(self._max_receive):
            try:
                frames = socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            if self._authorized is not None:
                try:
                    user_id = frames[-1].get("User-Id") or ""
                except zmq.ZMQError:  # no security mechanism named the peer
                    user_id = ""
                if not self._authorized(user_id):
                    self.unauthorized += 1
                    self.rejections.append(f"ground peer {user_id!r} may not acknowledge the downlink")
                    continue
            parts = [frame.bytes for frame in frames]
            peer = parts[0] if self._router and len(parts) > 1 else None
            try:
                message = msgpack.unpackb(parts[-1], raw=False, strict_map_key=False, ext_hook=_reject_ext)
            except Exception as exc:  # msgpack raises several unrelated types on bad input
                self.malformed += 1
                self.rejections.append(f"undecodable message from the ground: {type(exc).__name__}: {exc}")
                continue
            if peer is not None:
                self._peer = peer  # whoever spoke last is the ground
            if type(message) is dict and message.get("type") == "hello":
                self.hellos += 1
                continue
            out.append(message)  # the app checks it is a well-formed ack for its store
        return out
