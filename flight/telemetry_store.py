"""The onboard telemetry store: every message on the bus, in order, in SQLite (WAL).

One table per telemetry topic (``tlm.eps`` -> ``tlm_eps``) with a column per channel, so a channel
is one plain query away (``SELECT t_ns, battery_soc FROM tlm_eps``); events go to ``events`` and
commands and their responses to ``commands``. A column appears when a channel first appears. Every
row carries the mission time ``t_ns`` (ns since the epoch in ``run_meta``); the ``*_utc`` views add
ISO 8601 UTC time. The SHA-256 over the raw frames, in arrival order, is the run's telemetry hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable

from flight.bus import Bus, Message
from flight.rate_group import TickContext

_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")
_RESERVED = ("t_ns", "seq", "source")


def _table_name(topic: str) -> str:
    return _IDENTIFIER.sub("_", topic)


_SCALARS = (bool, int, float, str, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)
# The text of json.dumps(value, sort_keys=True, default=str). JSONEncoder.encode builds a C encoder
# anew at every call (~2 us of a ~3 us encode of a small list): this one is built once. No circular
# check (markers None): a body decoded from msgpack cannot hold a cycle.
try:
    from json.encoder import c_make_encoder as _c_make_encoder
except ImportError:  # a Python without the C accelerator: the same text, the slow way
    _c_make_encoder = None
if _c_make_encoder is not None:
    _c_encode = _c_make_encoder(None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ",
                                True, False, True)

    class _NotAFloat(Exception):
        pass

    class _FloatTexts(dict):
        """The JSON text of floats, by value, for long lists of floats.

        The ephemeris's predicted track is two lists of 361 floats every 10 s, each all but one
        value the same as in the sample 20 s before: a float's shortest repr costs ~180 ns, a
        lookup here ~40 ns. Only finite non-integral floats are kept, so no key is equal to an
        int, a bool, 0.0 against -0.0 (equal values, other texts) or NaN (never equal). A bus
        body holds only msgpack's types, so a hit is that very float value; anything that is not
        a float misses, and the caller then encodes the list the general way.
        """

        def __missing__(self, x: Any) -> str:
            if type(x) is not float:
                raise _NotAFloat
            text = "".join(_c_encode(x, 0))  # what the encoder writes for it inside a list
            if math.isfinite(x) and not x.is_integer():
                if len(self) >= _FLOAT_TEXTS_MAX:
                    self.clear()  # bounded; refilled from the next messages
                self[x] = text
            return text

    _FLOAT_TEXTS_MAX = 16_384  # ~2 MB; a day of ephemeris adds ~17 000 values
    _FLOAT_LIST_MIN = 16  # shorter lists: the encoder's own call costs less than a failed try
    _float_text = _FloatTexts().__getitem__

    def _to_json(value: Any) -> str:
        if type(value) is list:
            if not value:
                return "[]"
            if len(value) >= _FLOAT_LIST_MIN:
                try:
                    return "[" + ", ".join(map(_float_text, value)) + "]"
                except (_NotAFloat, TypeError):  # not all floats (TypeError: unhashable)
                    pass
        elif type(value) is dict and not value:
            # An empty map (grants with the GPU off, no sequence loaded): no encoder, ~0.6 us.
            return "{}"
        return "".join(_c_encode(value, 0))
else:
    _to_json = json.JSONEncoder(sort_keys=True, default=str).encode


def _column_value(value: Any) -> Any:
    if type(value) in _SCALAR_TYPES:
        return value
    return _to_json(value)


class TelemetryStore:
    def __init__(self, bus: Bus, path: Path, meta: dict[str, Any] | None = None,
                 flush_every_ticks: int = 64, epoch_unix_s: float | None = None,
                 listeners: tuple[Callable[[list[Message]], None], ...] = ()) -> None:
        self.path = Path(path)
        self._sub = bus.subscribe([""], hwm=1_000_000, name="telemetry-store")
        # Others that want every message (the downlink) get the ones decoded here, once.
        self._listeners = tuple(listeners)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS run_meta (key TEXT PRIMARY KEY, value TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS events (t_ns INTEGER NOT NULL, seq INTEGER, source TEXT,"
                         " severity TEXT, name TEXT, text TEXT, fields TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS commands (t_ns INTEGER NOT NULL, seq INTEGER, source TEXT,"
                         " topic TEXT, body TEXT)")
        for key, value in (meta or {}).items():
            self._db.execute("INSERT OR REPLACE INTO run_meta VALUES (?, ?)", (key, json.dumps(value)))
        self._epoch_unix_s = epoch_unix_s
        if epoch_unix_s is not None:
            self._create_utc_view("events")
            self._create_utc_view("commands")
        self._db.commit()
        self._columns: dict[str, list[str]] = {}
        self._known_keys: dict[str, frozenset[str]] = {}
        self._tables: dict[str, str] = {}  # topic -> table
        # topic -> (columns, known keys, pending rows, getter of all the columns' values, the number
        # of columns it gets): the hot path's view of the same state
        self._fast: dict[str, tuple[list[str], frozenset[str], list[tuple], Callable | None, int]] = {}
        self._pending: dict[str, list[tuple]] = {}
        self._flush_every_ticks = flush_every_ticks
        self._ticks_since_flush = 0
        self._hash = hashlib.sha256()
        self.messages_stored = 0

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def run(self, ctx: TickContext | None = None) -> None:
        update_hash = self._hash.update
        fast = self._fast
        stored = 0
        messages = self._sub.drain()
        for listener in self._listeners:
            listener(messages)
        for message in messages:
            update_hash(message.raw)
            body = message.body
            entry = fast.get(message.topic)
            # The common case: a telemetry packet whose channels all have columns already.
            if entry is not None and entry[1].issuperset(body):
                columns = entry[0]
                values = None
                # Every column present (the usual packet): one C call gets them. A body short of a
                # column (or holding a reserved name instead) raises KeyError and takes the general
                # way; so does a column list grown since the getter was built (another topic of the
                # same table).
                if len(body) == entry[4] == len(columns):
                    try:
                        values = entry[3](body)
                    except KeyError:
                        pass
                if values is None:
                    values = tuple(map(body.get, columns))
                if not _SCALAR_TYPES.issuperset(map(type, values)):
                    values = tuple([v if type(v) in _SCALAR_TYPES else _to_json(v) for v in values])
                entry[2].append((message.t_ns, message.seq, message.source) + values)
                stored += 1
            else:
                self._store(message)
        self.messages_stored += stored
        self._ticks_since_flush += 1
        if self._ticks_since_flush >= self._flush_every_ticks:
            self.flush()

    def _store(self, m: Message) -> None:
        self.messages_stored += 1
        kind = m.topic.split(".", 1)[0]
        body = m.body
        if kind == "evt":
            extra = {k: v for k, v in body.items() if k not in ("severity", "name", "text")}
            row = (m.t_ns, m.seq, m.source, body.get("severity"), body.get("name"), body.get("text"),
                   _to_json(extra) if extra else None)
            self._pending.setdefault("events", []).append(row)
        elif kind in ("cmd", "rsp"):
            row = (m.t_ns, m.seq, m.source, m.topic, _to_json(body))
            self._pending.setdefault("commands", []).append(row)
        else:
            table = self._tables.get(m.topic)
            if table is None:
                table = self._tables[m.topic] = _table_name(m.topic)
            known = self._known_keys.get(table)
            columns = self._columns[table] if known is not None and body.keys() <= known \
                else self._ensure_table(table, body)
            values = [body.get(c) for c in columns]
            if not _SCALAR_TYPES.issuperset(map(type, values)):
                values = [_column_value(v) for v in values]
            self._pending[table].append((m.t_ns, m.seq, m.source, *values))
            # itemgetter of two or more keys returns a tuple (of one, the bare value): none then.
            getter = operator.itemgetter(*columns) if len(columns) >= 2 else None
            self._fast[m.topic] = (columns, self._known_keys[table], self._pending[table], getter,
                                   len(columns) if getter is not None else -1)

    def _ensure_table(self, table: str, body: dict[str, Any]) -> list[str]:
        columns = self._columns.get(table)
        if columns is None:
            self.flush()
            columns = []
            self._db.execute(f'CREATE TABLE IF NOT EXISTS "{table}" (t_ns INTEGER NOT NULL, seq INTEGER, source TEXT)')
            # A store reopened over an earlier run's file (a restarted stack) keeps its columns.
            columns.extend(row[1] for row in self._db.execute(f'PRAGMA table_info("{table}")')
                           if row[1] not in _RESERVED)
            if self._epoch_unix_s is not None:
                self._create_utc_view(table)
            self._columns[table] = columns
        new = [k for k in body if k not in columns and k not in _RESERVED]
        if new:
            # Pending rows were built with the old column list: write them before it grows.
            self.flush()
            for key in new:
                self._db.execute(f'ALTER TABLE "{table}" ADD COLUMN "{key}"')
                columns.append(key)
        self._known_keys[table] = frozenset(columns) | frozenset(_RESERVED)
        self._pending.setdefault(table, [])
        return columns

    def _create_utc_view(self, table: str) -> None:
        self._db.execute(
            f'CREATE VIEW IF NOT EXISTS "{table}_utc" AS SELECT '
            f"strftime('%Y-%m-%dT%H:%M:%fZ', {self._epoch_unix_s!r} + t_ns / 1e9, 'unixepoch') AS time_utc, * "
            f'FROM "{table}"'
        )

    def flush(self) -> None:
        for table, rows in self._pending.items():
            if not rows:
                continue
            if table == "events":
                sql = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)"
            elif table == "commands":
                sql = "INSERT INTO commands VALUES (?, ?, ?, ?, ?)"
            else:
                width = 3 + len(self._columns[table])
                names = ", ".join(["t_ns", "seq", "source", *(f'"{c}"' for c in self._columns[table])])
                sql = f'INSERT INTO "{table}" ({names}) VALUES ({", ".join("?" * width)})'
            self._db.executemany(sql, rows)
            rows.clear()  # in place: the hot path holds these lists
        self._db.commit()
        self._ticks_since_flush = 0

    def close(self) -> None:
        self.run()
        self.flush()
        self._db.close()
