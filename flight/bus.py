"""The software bus: ZeroMQ PUB/SUB carrying msgpack messages.

One frame per message: ``topic bytes + b"\\x00" + msgpack([seq, t_ns, source, body])``.
The topic leads the frame so ZeroMQ's prefix filter does the routing; the NUL after it lets a
subscription ask for an exact topic (``b"tlm.eps\\x00"`` never matches ``tlm.eps2``).

Determinism in one process: every in-process publisher sends through the Bus's single PUB socket,
so the order on the wire is exactly the order of ``publish`` calls, and each subscription is its
own SUB socket that is drained explicitly (no threads, no polling loops).

No silent loss: every message carries a sequence number per (source, topic); a subscription
counts gaps as drops per topic. Frames that do not decode are rejected with a reason and counted;
``drain`` never raises because of what arrived on the wire.

Slow joiners: ``Bus.settle`` publishes probes on a reserved control topic until every
subscription has seen one. Probes are not delivered to users and use no user sequence numbers.

In-process costs (SIL runs every message through here): a subscription fed only by its own Bus
knows how many frames wait in its socket and reads exactly those; it trusts them (Publisher.publish
checked them) where frames from a connected outside peer are checked in full; and one publish is
decoded once for all the subscriptions that want it, so they share the message (read-only).

A Bus, its publishers and its subscriptions belong to one thread (ZeroMQ sockets are not
thread-safe); another thread or process gets its own socket through ``connect_subscription``.
"""

from __future__ import annotations

import itertools
import operator
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from flight.clock import SteppedClock

__all__ = [
    "CONTROL_PREFIX",
    "PROBE_TOPIC",
    "Bus",
    "BusDecodeError",
    "Message",
    "Publisher",
    "Subscription",
    "connect_subscription",
    "decode_message",
    "encode_message",
    "validate_topic",
]

# Topics under this prefix belong to the bus itself; publishers may not use them.
CONTROL_PREFIX = "_bus."
PROBE_TOPIC = CONTROL_PREFIX + "probe"
_CONTROL_PREFIX_B = CONTROL_PREFIX.encode()
_PROBE_FRAME_PREFIX = PROBE_TOPIC.encode() + b"\x00"

_SEP = b"\x00"
_POLICIES = ("queue", "latest")
_REJECTIONS_KEPT = 64
_TOPIC_CACHE_MAX = 4096  # bounds memory if a peer floods us with distinct topics
# Body keys remembered per stream as already checked to be str (the fast paths test a body
# with one set lookup per key); a stream with more distinct keys is checked in full each time.
_KNOWN_KEYS_MAX = 1024
_endpoint_ids = itertools.count()
# libzmq 4.3 (measured on 4.3.5): a reader hands its writer credit ("activate_write") each time the
# messages it has read from a pipe reach a multiple of the pipe's low-water mark, half the pipe's
# high-water mark rounded up. A bus subscription's inproc pipe holds 2 * hwm + 1 frames (its
# RCVHWM 2 * hwm plus the PUB's SNDHWM 1), so the credit comes every hwm + 1 frames read. Other
# versions: no assumption, the PUB takes in its commands after every read.
_CREDIT_RULE_KNOWN = zmq.zmq_version_info()[:2] == (4, 3)
_next_seq_of = operator.itemgetter(1)  # of a Publisher._topics entry
_topic_of = operator.attrgetter("topic")  # of a Message


# --------------------------------------------------------------------------- message format


@dataclass(frozen=True, slots=True)
class Message:
    """One bus message. ``raw`` is the exact frame it was decoded from (not part of equality)."""

    topic: str
    seq: int
    t_ns: int
    source: str
    body: dict
    raw: bytes = field(default=b"", compare=False, repr=False)


class BusDecodeError(ValueError):
    """A frame that is not a valid bus message; the text says what is wrong."""


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it may be published, else raise ValueError saying why.

    A topic is a non-empty str without NUL that does not end in "." (a trailing dot means
    "prefix" to ``Bus.subscribe``) and is not under the reserved control prefix.
    """
    if type(topic) is not str:
        raise TypeError(f"topic must be str, got {type(topic).__name__}")
    if not topic:
        raise ValueError("topic must not be empty")
    if "\x00" in topic:
        raise ValueError(f"topic {topic!r} contains NUL")
    if topic.endswith("."):
        raise ValueError(f"topic {topic!r} ends in '.', which is reserved for prefix filters")
    if topic.startswith(CONTROL_PREFIX):
        raise ValueError(f"topic {topic!r} is under the reserved prefix {CONTROL_PREFIX!r}")
    return topic


def _validate_source(source: object) -> str:
    if type(source) is not str or not source:
        raise ValueError(f"source must be a non-empty str, got {source!r}")
    return source


_join = "".join


def _body_ok(body: object) -> bool:
    """True for a dict whose keys are all str (join raises on any other key, at C speed)."""
    if type(body) is not dict:
        return False
    try:
        _join(body)
    except TypeError:
        return False
    return True


def _check_body(topic: str, body: object) -> None:
    if type(body) is not dict:
        raise TypeError(f"body of {topic!r} must be a dict, got {type(body).__name__}")
    for key in body:
        if type(key) is not str:
            raise TypeError(f"body of {topic!r} has a non-str key {key!r}")


def encode_message(topic: str, seq: int, t_ns: int, source: str, body: dict) -> bytes:
    """Encode one message as a single bus frame (validates every field)."""
    validate_topic(topic)
    _validate_source(source)
    if type(seq) is not int or seq < 0:
        raise ValueError(f"seq must be an int >= 0, got {seq!r}")
    if type(t_ns) is not int or t_ns < 0:
        raise ValueError(f"t_ns must be an int >= 0, got {t_ns!r}")
    _check_body(topic, body)
    try:
        payload = msgpack.packb([seq, t_ns, source, body], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"body of {topic!r} is not msgpack-able: {exc}") from None
    return topic.encode() + _SEP + payload


def _reject_ext(code: int, data: bytes) -> Any:
    raise BusDecodeError(f"msgpack extension type {code} is not allowed")


def _unpack_payload(payload: bytes) -> Any:
    try:
        # strict_map_key=False: nested maps may have int keys (e.g. per-cell values); the
        # top-level body keys are checked separately.
        return msgpack.unpackb(payload, raw=False, strict_map_key=False, ext_hook=_reject_ext)
    except BusDecodeError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise BusDecodeError(f"payload is not valid msgpack ({type(exc).__name__}: {exc})") from None


def _check_payload(topic: str, payload: Any) -> tuple[int, int, str, dict]:
    if type(payload) is not list or len(payload) != 4:
        shape = f"{type(payload).__name__}" + (f" of {len(payload)}" if type(payload) is list else "")
        raise BusDecodeError(f"{topic}: payload must be [seq, t_ns, source, body], got {shape}")
    seq, t_ns, source, body = payload
    if type(seq) is not int or seq < 0:
        raise BusDecodeError(f"{topic}: seq must be an int >= 0, got {seq!r}")
    if type(t_ns) is not int or t_ns < 0:
        raise BusDecodeError(f"{topic}: t_ns must be an int >= 0, got {t_ns!r}")
    if type(source) is not str or not source:
        raise BusDecodeError(f"{topic}: source must be a non-empty str, got {source!r}")
    if type(body) is not dict:
        raise BusDecodeError(f"{topic}: body must be a map, got {type(body).__name__}")
    for key in body:
        if type(key) is not str:
            raise BusDecodeError(f"{topic}: body key {key!r} is not a str")
    return seq, t_ns, source, body


def _split_topic(frame: bytes) -> tuple[str, int]:
    """Return (topic, index of the NUL separator) or raise BusDecodeError."""
    cut = frame.find(_SEP)
    if cut < 0:
        raise BusDecodeError("frame has no NUL separator between topic and payload")
    if cut == 0:
        raise BusDecodeError("frame has an empty topic")
    try:
        topic = frame[:cut].decode()
    except UnicodeDecodeError:
        raise BusDecodeError(f"topic {frame[:cut][:40]!r} is not valid UTF-8") from None
    if topic.endswith("."):
        raise BusDecodeError(f"topic {topic!r} ends in '.'")
    return topic, cut


def decode_message(frame: bytes) -> Message:
    """Decode one frame; raise BusDecodeError (and nothing else) naming what is wrong."""
    if not isinstance(frame, (bytes, bytearray, memoryview)):
        raise BusDecodeError(f"frame must be bytes, got {type(frame).__name__}")
    frame = bytes(frame)
    topic, cut = _split_topic(frame)
    seq, t_ns, source, body = _check_payload(topic, _unpack_payload(frame[cut + 1 :]))
    return Message(topic, seq, t_ns, source, body, frame)


class _MessageSlots:
    """Message's exact slot layout without the frozen ``__setattr__``.

    The drain loop fills one of these with already-validated fields and then makes it a Message
    by assigning ``__class__``, which CPython allows between classes with identical slots. The
    result is an ordinary Message (type, equality, hashing, immutability); building it this way
    takes ~160 ns against ~420 ns through the frozen slot descriptors, and it is the
    per-message cost of every subscription.
    """

    __slots__ = Message.__slots__


def _build_message(topic: str, seq: int, t_ns: int, source: str, body: dict, raw: bytes) -> Message:
    """A Message from already-validated fields (see _MessageSlots)."""
    message = _MessageSlots()
    message.topic = topic
    message.seq = seq
    message.t_ns = t_ns
    message.source = source
    message.body = body
    message.raw = raw
    message.__class__ = Message
    return message


# --------------------------------------------------------------------------- subscription


def _topic_filters(topics: Iterable[str]) -> list[bytes]:
    """ZeroMQ filters: "" and "x." are prefixes, anything else an exact topic (+ NUL)."""
    if isinstance(topics, str):
        raise TypeError("topics must be an iterable of str, not a single str")
    filters: list[bytes] = []
    for topic in topics:
        if type(topic) is not str:
            raise TypeError(f"topic filter must be str, got {type(topic).__name__}")
        if "\x00" in topic:
            raise ValueError(f"topic filter {topic!r} contains NUL")
        if topic == "" or topic.endswith("."):
            filters.append(topic.encode())
        else:
            filters.append(topic.encode() + _SEP)
    if not filters:
        raise ValueError("a subscription needs at least one topic filter")
    return filters


class Subscription:
    """One SUB socket with its own receive high-water mark, drop and reject accounting.

    ``policy="queue"`` delivers every message; ``policy="latest"`` returns, per drain, only the
    newest message of each topic (older ones are counted as ``superseded``, not as drops).
    """

    def __init__(
        self,
        socket: zmq.Socket,
        topics: Iterable[str],
        *,
        name: str,
        policy: str = "queue",
        seq_baseline: dict[tuple[str, str], int] | None = None,
        owns_context: zmq.Context | None = None,
        after_read: Callable[[], None] | None = None,
    ) -> None:
        if policy not in _POLICIES:
            raise ValueError(f"policy must be one of {_POLICIES}, got {policy!r}")
        self.name = name
        self.policy = policy
        filters = _topic_filters(topics)
        self.topics: tuple[str, ...] = tuple(f.rstrip(_SEP).decode() for f in filters)
        self._socket = socket
        self._owned_context = owns_context
        self._after_read = after_read
        # Frames read from the socket (probes included), and every how many of them its reader sends
        # the bus's PUB a command that ``after_read`` must let it take in (None: after every read).
        self._frames_read = 0
        self._credit_every: int | None = None
        for topic_filter in filters:
            socket.setsockopt(zmq.SUBSCRIBE, topic_filter)
        socket.setsockopt(zmq.SUBSCRIBE, _PROBE_FRAME_PREFIX)
        # Per topic bytes: [{source: stream}, whether other subscriptions of the bus want the topic
        # too]; a stream is [next expected seq, body keys already checked to be str, topic]. On a
        # local bus the baseline is the publishers' counters at subscribe time, so even the first
        # message of a stream can be counted as dropped; for a remote peer (None) the first
        # message seen sets the baseline.
        self._streams: dict[bytes, list] = {}
        self._baseline = seq_baseline
        self._backlog: deque[bytes] = deque()  # user frames read while waiting for a probe
        self._topic_cache: dict[bytes, str] = {}
        self._latest: dict[str, Message] = {}
        self._rejections: deque[str] = deque(maxlen=_REJECTIONS_KEPT)
        self.settled = False
        self.received = 0
        self.malformed = 0
        self.superseded = 0
        self.seq_resets = 0  # a stream restarted (seq went backwards): publisher restart
        self.dropped: dict[str, int] = {}
        self.closed = False
        self._filters = tuple(filters)
        # Fed only by its Bus's in-process PUB, a subscription knows how many frames wait in its
        # socket without asking ZeroMQ: one per message published on a topic it wants (the
        # publishers' seq counters, ``_feeds``) and one per settle probe, less what it has read.
        # It reads exactly that many, so it never pays for finding the socket empty (a ZeroMQ
        # Again costs ~5 us, and a reader that saw its pipe empty costs ~4 us more to wake on
        # the next message), and skips the socket when nothing waits. Any other feed reads until
        # the socket is empty.
        self._bus_fed = False
        self._feeds: list[list] = []  # the publishers' topic entries this subscription wants
        self._frames_taken = 0  # frames read, plus probes not sent to it (negative: owed)
        # Set by the Bus: the last message decoded per topic by any of its subscriptions, and how
        # many of its subscriptions want a topic (given ``topic + NUL``).
        self._decoded: dict[bytes, Message] | None = None
        self._fanout: Callable[[bytes], int] | None = None

    def _wants(self, frame_prefix: bytes) -> bool:
        """Whether a frame starting ``topic + NUL`` passes this subscription's filters."""
        return any(frame_prefix.startswith(f) for f in self._filters)

    # -- accounting -------------------------------------------------------------------------

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def rejections(self) -> list[str]:
        """The last few rejection reasons, oldest first."""
        return list(self._rejections)

    def latest(self, topic: str) -> Message | None:
        """The last valid message seen on ``topic`` (None if none yet)."""
        return self._latest.get(topic)

    def stats(self) -> dict:
        return {
            "received": self.received,
            "dropped": dict(self.dropped),
            "dropped_total": self.dropped_total,
            "malformed": self.malformed,
            "superseded": self.superseded,
            "seq_resets": self.seq_resets,
            "settled": self.settled,
        }

    # -- receiving ---------------------------------------------------------------------------

    def connect(self, endpoint: str) -> None:
        """Also receive from another endpoint (another bus, a bench process, a test injector)."""
        self._bus_fed = False
        self._credit_every = None  # frames now come through more than one pipe
        self._socket.connect(endpoint)

    def poll(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for a frame (for consoles and benches; SIL never waits)."""
        if self._backlog:
            return True
        return bool(self._socket.poll(timeout_ms, zmq.POLLIN))

    def drain(self, max_messages: int | None = None) -> list[Message]:
        """Take what has arrived, without blocking; at most ``max_messages`` frames are read."""
        if max_messages is not None and max_messages < 0:
            raise ValueError(f"max_messages must be >= 0 or None, got {max_messages}")
        # Frames waiting in a bus-fed socket; never below 0 unless miscounted, and then the socket
        # is read until empty, which sets the count right again. Nothing waiting is the common case
        # (a SIL tick drains ~14 command subscriptions that have nothing): answered first.
        waiting = sum(map(_next_seq_of, self._feeds)) - self._frames_taken if self._bus_fed else -1
        if waiting == 0 and not self._backlog:
            return []
        out: list[Message] = []
        budget = -1 if max_messages is None else max_messages
        try:
            while budget and self._backlog:
                self._accept(self._backlog.popleft(), out)
                budget -= 1
            if waiting >= 0:
                budget = waiting if budget < 0 else min(budget, waiting)
            if budget and not self.closed:
                self._read_socket(budget, out)
        finally:
            # Every user message taken off the socket counts, superseded ones included.
            self.received += len(out)
        if self.policy == "latest" and len(out) > 1:
            out = self._keep_latest(out)
        return out

    def drain_with_raw(self, max_messages: int | None = None) -> list[tuple[Message, bytes]]:
        """Like ``drain`` but with each message's exact frame bytes (for hashing and recording)."""
        return [(message, message.raw) for message in self.drain(max_messages)]

    def _keep_latest(self, batch: list[Message]) -> list[Message]:
        if len(set(map(_topic_of, batch))) == len(batch):
            return batch  # one message per topic (a drain per frame): nothing superseded (tested in C)
        last_index = {message.topic: i for i, message in enumerate(batch)}
        self.superseded += len(batch) - len(last_index)
        return [batch[i] for i in sorted(last_index.values())]

    def _read_socket(self, budget: int, out: list[Message]) -> None:
        """The hot loop: the common case (valid frame, known topic) is inlined; anything else
        goes through ``_accept``, which gives the reason. Reads at most ``budget`` frames (-1: until
        the socket is empty); a bus-fed subscription is given exactly the number waiting."""
        recv = self._socket.recv
        flags = zmq.NOBLOCK
        again = zmq.Again
        streams = self._streams
        decoded = self._decoded
        latest = self._latest
        append = out.append
        unpackb = msgpack.unpackb
        make = _MessageSlots
        message_class = Message
        # Frames on a socket fed only by its own Bus were written by Publisher.publish, which
        # already checked seq, t_ns and body keys: checking them again per message cost ~15 % of
        # a receive. A subscription that also reads an outside peer (connect) checks everything.
        trusted = self._bus_fed
        frame = None
        reads = 0
        for reads in itertools.count(1) if budget < 0 else range(1, budget + 1):
            try:
                frame = recv(flags)
            except again:
                reads -= 1
                if trusted:
                    # Fewer frames than published: ZeroMQ dropped some at the high-water mark (the
                    # seq gaps count them). None of them will come: start counting afresh.
                    self._frames_taken = sum(map(_next_seq_of, self._feeds))
                    trusted = None
                break
            cut = frame.find(_SEP)
            # A frame without NUL (cut -1) or with an empty topic (cut 0) finds no stream: a
            # known topic is valid UTF-8, so it never begins with 0x94, the byte a whole frame
            # would need to parse as [seq, t_ns, source, body].
            key = frame[:cut]
            topic_streams = streams.get(key)
            if topic_streams is None:
                self._accept(frame, out)  # a topic not seen yet, control or malformed
                continue
            if topic_streams[1]:
                # Another subscription may have decoded these very bytes already (the frames of
                # one publish are equal): take its message, whose body is then shared.
                message = decoded.get(key)
                if message is not None and message.raw == frame:
                    stream = topic_streams[0].get(message.source)
                    if stream is not None and stream[0] == message.seq:
                        stream[0] += 1
                        latest[stream[2]] = message
                        append(message)
                        continue
            # Anything unexpected (bad msgpack, not 4 fields, unhashable or unknown source: a
            # new stream) leaves stream None for the slow path.
            try:
                seq, t_ns, source, body = unpackb(frame[cut + 1 :], strict_map_key=False, ext_hook=_reject_ext)
                stream = topic_streams[0][source]
            except Exception:
                stream = None
            # A known stream means source equals a str already validated (no other msgpack
            # type compares equal to a str); seq == expected >= 0 and the type test leave only
            # an int in order; known body keys were checked to be str.
            if stream is not None and stream[0] == seq and (trusted or (
                type(seq) is int and type(t_ns) is int and t_ns >= 0 and type(body) is dict
                and stream[1].issuperset(body)
            )):
                stream[0] = seq + 1
                topic = stream[2]
                message = make()
                message.topic = topic
                message.seq = seq
                message.t_ns = t_ns
                message.source = source
                message.body = body
                message.raw = frame
                message.__class__ = message_class
                latest[topic] = message
                append(message)
                if topic_streams[1]:
                    decoded[key] = message
                continue
            self._accept(frame, out)  # first of a stream, gap, new keys, control or malformed
        if trusted and budget > 0:
            self._frames_taken += budget  # all read: the count was exact
        if frame is not None and self._after_read is not None:
            before = self._frames_read
            self._frames_read = before + reads
            every = self._credit_every
            # The PUB must take in the reader's credit before the next publish (delivery then depends
            # only on the order of calls); a read that sent none needs no sync (~2.4 us a syscall).
            if every is None or before // every != (before + reads) // every:
                self._after_read()

    def _accept(self, frame: bytes, out: list[Message]) -> None:
        """Decode one frame, account for it and append it to ``out`` if it is a user message."""
        if frame.startswith(_CONTROL_PREFIX_B):
            if frame.startswith(_PROBE_FRAME_PREFIX):
                self.settled = True
                return
        try:
            message = self._decode(frame)
        except BusDecodeError as exc:
            self.malformed += 1
            self._rejections.append(str(exc))
            return
        topic = message.topic
        topic_streams = self._streams.get(frame[: frame.find(_SEP)])
        if topic_streams is None:
            key = topic.encode()
            shared = self._fanout is not None and self._fanout(key + _SEP) > 1
            topic_streams = self._streams[key] = [{}, shared]
        sources = topic_streams[0]
        stream = sources.get(message.source)
        if stream is None:
            key = (message.source, topic)
            expected = message.seq if self._baseline is None else self._baseline.get(key, 0)
            self.dropped.setdefault(topic, 0)  # every topic seen is listed, drops or not
            stream = sources[message.source] = [expected, set(), topic]
        expected = stream[0]
        seq = message.seq
        if seq > expected:
            self.dropped[topic] += seq - expected
        elif seq < expected:
            self.seq_resets += 1
        stream[0] = seq + 1
        known_keys = stream[1]
        if len(known_keys) < _KNOWN_KEYS_MAX:
            known_keys.update(message.body)  # _decode checked that they are str
        self._latest[topic] = message
        out.append(message)

    def _decode(self, frame: bytes) -> Message:
        # Same checks as decode_message, caching the topic decode (topics repeat).
        cut = frame.find(_SEP)
        topic = self._topic_cache.get(frame[:cut]) if cut > 0 else None
        if topic is None:
            topic, cut = _split_topic(frame)
            if topic.startswith(CONTROL_PREFIX):
                raise BusDecodeError(f"unknown control topic {topic!r}")
            if len(self._topic_cache) < _TOPIC_CACHE_MAX:
                self._topic_cache[frame[:cut]] = topic
        seq, t_ns, source, body = _check_payload(topic, _unpack_payload(frame[cut + 1 :]))
        return _build_message(topic, seq, t_ns, source, body, frame)

    def _wait_for_probe(self, timeout_ms: int) -> bool:
        """Read until a probe arrives (user frames go to the backlog). True once settled."""
        if self.settled:
            return True
        if timeout_ms > 0 and not self._socket.poll(timeout_ms, zmq.POLLIN):
            return False
        while not self.settled:
            try:
                frame = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._frames_taken += 1
            self._frames_read += 1
            if frame.startswith(_PROBE_FRAME_PREFIX):
                self.settled = True
            else:
                self._backlog.append(frame)
        if self._after_read is not None:
            self._after_read()
        return self.settled

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._socket.close(linger=0)
        if self._after_read is not None:
            self._after_read()
        if self._owned_context is not None:
            self._owned_context.term()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect_subscription(
    endpoint: str,
    topics: Iterable[str],
    *,
    context: zmq.Context | None = None,
    hwm: int = 10_000,
    policy: str = "queue",
    name: str = "remote",
) -> Subscription:
    """A subscription to another process's bus (tcp:// or ipc://), e.g. for the console.

    The first message seen per (source, topic) sets the sequence baseline: a late joiner does not
    count what was published before it connected. It is settled by the publishing Bus's
    ``settle(extra=[...])`` when in the same process, or by the first probe it sees.
    """
    owned = None
    if context is None:
        context = owned = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.RCVHWM, _check_hwm("hwm", hwm))
    socket.setsockopt(zmq.LINGER, 0)
    subscription = Subscription(socket, topics, name=name, policy=policy, owns_context=owned)
    socket.connect(endpoint)
    return subscription


def _check_hwm(label: str, hwm: object) -> int:
    if type(hwm) is not int or hwm < 1:
        raise ValueError(f"{label} must be an int >= 1, got {hwm!r}")
    return hwm


# --------------------------------------------------------------------------- publishing


class Publisher:
    """Publishes as one source; seq numbers count per topic from 0. Get one from Bus.publisher.

    ``publish(topic, body)`` sends ``body`` on ``topic``, stamped with the bus time and this
    source, and returns its seq. It is a closure over the publisher's state, built once, rather
    than a method: the bus's hottest call then loads no attributes (~0.1 us of ~1.6 us a message).
    """

    publish: Callable[[str, dict], int]

    def __init__(self, bus: Bus, source: str) -> None:
        self.source = _validate_source(source)
        self._bus = bus
        # topic -> [frame prefix bytes, next seq, body keys already checked to be str]; the
        # bus-fed subscriptions that want the topic hold the same list in their _feeds.
        self._topics: dict[str, list] = {}
        self.publish = self._publish_function()

    @property
    def messages_sent(self) -> int:
        # Each topic's seq counts, from 0, the messages sent on it.
        return sum(map(_next_seq_of, self._topics.values()))

    def next_seq(self, topic: str) -> int:
        entry = self._topics.get(topic)
        return 0 if entry is None else entry[1]

    def seq_counters(self) -> dict[str, int]:
        """Next seq per topic (what a new subscription will expect)."""
        return {topic: entry[1] for topic, entry in self._topics.items()}

    def _add_topic(self, topic: str) -> list:
        prefix = validate_topic(topic).encode() + _SEP
        entry = self._topics[topic] = [prefix, 0, set()]
        for subscription in self._bus._subscribers_of(prefix):
            subscription._feeds.append(entry)
        return entry

    def _publish_function(self) -> Callable[[str, dict], int]:
        topics, add_topic, source, bus = self._topics, self._add_topic, self.source, self._bus
        time_source, send = bus._time_source, backend_send(bus._socket)
        pack = msgpack.Packer(use_bin_type=True).pack
        # A SteppedClock only ever holds an int >= 0 (its constructor and advances check): its
        # readings need no check (~45 ns of a ~1.3 us publish). Any other source is checked.
        check_time = not _is_stepped_clock_reading(time_source)

        def publish(topic: str, body: dict) -> int:
            """Send ``body`` on ``topic``, stamped with the bus time and this source; return its seq."""
            try:
                entry = topics[topic]
            except KeyError:
                entry = add_topic(topic)
            if type(body) is not dict or not entry[2].issuperset(body):
                _learn_body_keys(topic, body, entry[2])  # raises unless every key is a str
            t_ns = time_source()
            if check_time and (type(t_ns) is not int or t_ns < 0):
                raise ValueError(f"bus time source returned {t_ns!r}; it must be an int >= 0 (ns)")
            seq = entry[1]
            try:
                payload = pack([seq, t_ns, source, body])
            except (TypeError, ValueError, OverflowError) as exc:
                raise TypeError(f"body of {topic!r} is not msgpack-able: {exc}") from None
            try:
                send(entry[0] + payload)
            except zmq.ZMQError:
                if bus.closed:
                    raise RuntimeError(f"publish on closed bus {bus.name!r}") from None
                raise
            entry[1] = seq + 1
            return seq

        return publish


def _is_stepped_clock_reading(time_source: Callable[[], int]) -> bool:
    """Whether ``time_source`` is exactly ``SteppedClock.now_ns`` bound to a SteppedClock."""
    return (getattr(time_source, "__func__", None) is SteppedClock.now_ns
            and type(getattr(time_source, "__self__", None)) is SteppedClock)


def backend_send(socket: zmq.Socket) -> Callable[..., Any]:
    """``socket.send`` without pyzmq's Python layer, which only adds routing_id and group handling
    (unused here) around the backend's send: ~0.35 us of a publish."""
    for cls in type(socket).__mro__[1:]:
        if cls.__module__.startswith("zmq.backend") and "send" in vars(cls):
            return cls.send.__get__(socket)
    return socket.send


def _learn_body_keys(topic: str, body: object, known_keys: set) -> None:
    """Check a body the fast test could not vouch for; remember its keys once they pass."""
    if not _body_ok(body):
        _check_body(topic, body)
    if len(known_keys) < _KNOWN_KEYS_MAX:
        known_keys.update(body)


# --------------------------------------------------------------------------- bus


class Bus:
    """A software bus: one PUB socket bound in-process, plus any tcp/ipc endpoints.

    In-process subscriptions receive in exactly the order ``publish`` was called. A
    subscription's ``hwm`` is the number of frames it can always take between two drains (it
    may take up to twice that): the in-process endpoint is bound with a
    send high-water mark of 1 because ZeroMQ adds both marks into one inproc pipe. ``send_hwm``
    applies to endpoints added with ``bind`` (tcp/ipc peers).
    """

    def __init__(
        self,
        time_source: Callable[[], int],
        *,
        context: zmq.Context | None = None,
        name: str = "sunlit",
        send_hwm: int = 100_000,
    ) -> None:
        self._time_source = time_source
        self._owns_context = context is None
        self.context = zmq.Context() if context is None else context
        self.name = name
        self.send_hwm = _check_hwm("send_hwm", send_hwm)
        self.closed = False
        self._socket = self.context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, 1)  # inproc: subscription hwm is the capacity
        self.endpoint = f"inproc://{name}-bus-{next(_endpoint_ids)}"
        self._socket.bind(self.endpoint)
        self._socket.setsockopt(zmq.SNDHWM, self.send_hwm)  # for later tcp/ipc binds
        self.endpoints: list[str] = [self.endpoint]
        self._publishers: dict[str, Publisher] = {}
        self._subscriptions: dict[str, Subscription] = {}
        # Per topic bytes, the last message one of the subscriptions decoded, for the others that
        # want the same topic: each frame crosses ZeroMQ to every subscription, but one publish
        # is decoded once. Bodies are therefore shared between subscriptions (read-only, as the
        # frozen Message itself); one entry per topic bounds it.
        self._decoded: dict[bytes, Message] = {}
        self._probes_sent = 0

    def bind(self, endpoint: str) -> str:
        """Also serve ``endpoint`` (tcp:// or ipc://); returns the bound address (port filled in)."""
        if not endpoint.startswith(("tcp://", "ipc://")):
            raise ValueError(f"bind endpoint must be tcp:// or ipc://, got {endpoint!r}")
        self._socket.bind(endpoint)
        bound = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.endpoints.append(bound)
        return bound

    def publisher(self, source: str) -> Publisher:
        """The publisher for ``source`` (one per source, so its seq counters are never forked)."""
        publisher = self._publishers.get(source)
        if publisher is None:
            publisher = self._publishers[source] = Publisher(self, source)
        return publisher

    @property
    def messages_sent(self) -> int:
        return sum(map(_next_seq_of, itertools.chain.from_iterable(
            p._topics.values() for p in self._publishers.values())))

    def subscribe(
        self,
        topics: Iterable[str],
        *,
        hwm: int = 10_000,
        policy: str = "queue",
        name: str = "",
    ) -> Subscription:
        """Subscribe to topics: "" or a string ending in "." is a prefix, anything else exact."""
        if self.closed:
            raise RuntimeError("subscribe on a closed bus")
        name = name or f"sub{len(self._subscriptions)}"
        if name in self._subscriptions:
            raise ValueError(f"subscription name {name!r} is already used on this bus")
        baseline = {
            (source, topic): seq
            for source, publisher in self._publishers.items()
            for topic, seq in publisher.seq_counters().items()
        }
        socket = self.context.socket(zmq.SUB)
        try:
            # ZeroMQ's reader returns credit to the writer only every half high-water mark it
            # reads, so after a partial drain the writer may still count up to hwm/2 frames as
            # queued. Twice the mark guarantees room for hwm new frames whatever was drained.
            socket.setsockopt(zmq.RCVHWM, 2 * _check_hwm("hwm", hwm))
            socket.setsockopt(zmq.LINGER, 0)
            subscription = Subscription(
                socket, topics, name=name, policy=policy, seq_baseline=baseline, after_read=self._sync_pipes
            )
            socket.connect(self.endpoint)
        except Exception:
            socket.close(linger=0)
            raise
        self._sync_pipes()
        self._subscriptions[name] = subscription
        subscription._bus_fed = True
        if _CREDIT_RULE_KNOWN:
            subscription._credit_every = _check_hwm("hwm", hwm) + 1
        subscription._decoded = self._decoded
        subscription._fanout = self._fanout
        for other in self._subscriptions.values():
            for key, topic_streams in other._streams.items():
                if subscription._wants(key + _SEP):
                    topic_streams[1] = True  # now wanted by two
        for publisher in self._publishers.values():
            for entry in publisher._topics.values():
                if subscription._wants(entry[0]):
                    subscription._feeds.append(entry)
                    subscription._frames_taken += entry[1]  # sent before it joined: never arrive
        return subscription

    def _fanout(self, frame_prefix: bytes) -> int:
        return sum(1 for s in self._subscriptions.values() if s._bus_fed and not s.closed and s._wants(frame_prefix))

    def _subscribers_of(self, frame_prefix: bytes) -> list[Subscription]:
        return [s for s in self._subscriptions.values() if not s.closed and s._wants(frame_prefix)]

    def _sync_pipes(self) -> None:
        """Make the PUB socket take in its pending pipe commands now.

        ZeroMQ applies a new subscriber's pipe, and the "queue has room again" notice after a
        reader drains a full queue, only when the publishing socket processes its commands, and
        ``send`` does that at most once per ~1 ms (a CPU-timestamp throttle). Without this, whether
        a message right after ``subscribe`` or after an overflow gets through would depend on
        timing; reading EVENTS processes the commands unthrottled, so delivery depends only on
        the order of calls.
        """
        if not self.closed:
            self._socket.getsockopt(zmq.EVENTS)

    @property
    def subscriptions(self) -> dict[str, Subscription]:
        return dict(self._subscriptions)

    def settle(self, max_rounds: int = 1000, *, extra: Iterable[Subscription] = (), poll_ms: int = 10) -> int:
        """Publish probes until every subscription (and ``extra`` ones) has seen one.

        Returns the number of probe rounds used. In-process subscriptions settle at once; tcp
        peers need real time, so later rounds wait up to ``poll_ms`` per subscription.
        Raises RuntimeError naming the subscriptions that never settled.
        """
        waiting = [s for s in (*self._subscriptions.values(), *extra) if not (s.settled or s.closed)]
        rounds = 0
        while waiting:
            if rounds >= max_rounds:
                names = ", ".join(s.name for s in waiting)
                raise RuntimeError(f"bus {self.name!r}: subscriptions never settled after {rounds} probe rounds: {names}")
            self._socket.send(_PROBE_FRAME_PREFIX + msgpack.packb(self._probes_sent))
            self._probes_sent += 1
            for subscription in self._subscriptions.values():
                subscription._frames_taken -= 1  # every subscription takes the probe prefix
            timeout_ms = min(rounds, poll_ms)  # first round costs nothing in-process
            rounds += 1
            waiting = [s for s in waiting if not s._wait_for_probe(timeout_ms)]
        return rounds

    def stats(self) -> dict:
        """Per subscription name: received, dropped per topic, malformed and more."""
        return {name: s.stats() for name, s in self._subscriptions.items()}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for subscription in self._subscriptions.values():
            subscription.close()
        self._socket.close(linger=0)
        if self._owns_context:
            self.context.term()

    def __del__(self) -> None:
        # A bus dropped without close() would leave its context to a garbage-collected term(),
        # which blocks forever on sockets still open: close them first.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have torn zmq down already
            pass

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
