"""The onboard telemetry store: rows and their text, and nothing lost at close."""

from __future__ import annotations

import json
import sqlite3

from flight.bus import Bus
from flight.telemetry_store import TelemetryStore, _to_json


def test_non_scalar_values_are_stored_as_json_dumps_text():
    values = [
        ["inference", "training"], {"training": 300.0, "inference": 12.5}, [], {}, [1.5] * 50,
        {"b": [1, {"z": None, "a": True}], "a": float("nan")}, {"x": float("inf"), "y": -0.0},
        ["ünïcode", "\x00ctl"], {3: "int key", 1: "another"}, b"raw bytes", {"v": b"\x01"},
    ]
    for value in values:
        assert _to_json(value) == json.dumps(value, sort_keys=True, default=str)


def test_every_message_is_stored_and_flushed_at_close(tmp_path):
    t_ns = [0]
    bus = Bus(lambda: t_ns[0], name="store-test")
    pub = bus.publisher("gen")
    store = TelemetryStore(bus, tmp_path / "t.db", flush_every_ticks=1000)
    bus.settle()
    for k in range(10):
        t_ns[0] = k
        pub.publish("tlm.gen", {"k": k, "grants": {"training": float(k)}, "work": ["a", "b"][: k % 3]})
        pub.publish("evt.gen", {"severity": "ACTIVITY_LO", "name": "TICK", "text": f"tick {k}", "k": k})
        store.run()
    store.close()  # 10 ticks, never flushed before: close writes them all
    bus.close()
    db = sqlite3.connect(tmp_path / "t.db")
    rows = db.execute("SELECT t_ns, k, grants, work FROM tlm_gen ORDER BY t_ns").fetchall()
    assert rows == [(k, k, json.dumps({"training": float(k)}), json.dumps(["a", "b"][: k % 3])) for k in range(10)]
    events = db.execute("SELECT name, text, fields FROM events ORDER BY t_ns").fetchall()
    assert events == [("TICK", f"tick {k}", json.dumps({"k": k})) for k in range(10)]
    assert store.messages_stored == 20


def test_rows_hold_each_channel_in_its_column_whatever_the_body_holds(tmp_path):
    """The hot path takes all the columns in one call when a body has exactly them: bodies short of
    a column, holding a reserved name, of one column, or of a table another topic grew, still get
    every value in its column (None where absent)."""
    t_ns = [0]
    bus = Bus(lambda: t_ns[0], name="store-rows")
    pub = bus.publisher("gen")
    store = TelemetryStore(bus, tmp_path / "t.db", flush_every_ticks=1000)
    bus.settle()
    bodies = [
        ("tlm.a", {"x": 1.0, "y": 2.0, "z": "s"}),
        ("tlm.a", {"x": 3.0, "y": 4.0, "z": "t"}),  # the usual packet: every column
        ("tlm.a", {"z": "u", "x": 5.0, "y": [6]}),  # another key order, a non-scalar
        ("tlm.a", {"x": 7.0, "y": 8.0}),  # short of a column
        ("tlm.a", {"x": 9.0, "y": 10.0, "seq": 99}),  # a reserved name instead of z
        ("tlm.one", {"v": 1}),
        ("tlm.one", {"v": 2}),  # one column
        ("tlm.a_b", {"p": 1, "q": 2}),
        ("tlm.a-b", {"p": 3, "q": 4, "r": 5}),  # same table, grows it
        ("tlm.a_b", {"p": 6, "q": 7}),  # its getter predates the new column
        ("tlm.a_b", {"p": 8, "q": 9, "r": 10}),
    ]
    for k, (topic, body) in enumerate(bodies):
        t_ns[0] = k
        pub.publish(topic, body)
        store.run()
    store.close()
    bus.close()
    db = sqlite3.connect(tmp_path / "t.db")
    assert db.execute("SELECT t_ns, x, y, z FROM tlm_a ORDER BY t_ns").fetchall() == [
        (0, 1.0, 2.0, "s"), (1, 3.0, 4.0, "t"), (2, 5.0, "[6]", "u"), (3, 7.0, 8.0, None), (4, 9.0, 10.0, None)]
    assert db.execute("SELECT seq FROM tlm_a WHERE t_ns = 4").fetchone() == (4,)  # the bus's seq, not the body's
    assert db.execute("SELECT t_ns, v FROM tlm_one ORDER BY t_ns").fetchall() == [(5, 1), (6, 2)]
    assert db.execute("SELECT t_ns, p, q, r FROM tlm_a_b ORDER BY t_ns").fetchall() == [
        (7, 1, 2, None), (8, 3, 4, 5), (9, 6, 7, None), (10, 8, 9, 10)]
    assert store.messages_stored == len(bodies)


def test_long_lists_of_floats_keep_json_dumps_text_whatever_the_texts_remembered():
    """Long float lists are written from remembered float texts: equal values of other types
    (1 and True against 1.0), 0.0 against -0.0, NaN and infinities must still read as json.dumps."""
    import random

    import flight.telemetry_store as store_module

    rng = random.Random(5)
    track = [round(rng.uniform(-90.0, 90.0), 3) for _ in range(400)]
    lists = [
        track[:361], track[1:362], track[:361],  # a sliding window: mostly remembered values
        [1.0, 1.5, 2.5] * 10, [1, 1.5, 2.5] * 10, [True, 1.5, 2.5] * 10, [1.5, 2.5, 1] * 10,
        [0.0, -0.0, 0.5] * 8, [-0.0, 0.0, 0.5] * 8, [float("nan"), float("inf"), -float("inf"), 0.25] * 5,
        [0.1 + 0.2] * 20, [1e300, 1e-300, 5e-324, -1.7976931348623157e308] * 5,
        [1.5] * 15 + [[1.5]], [1.5] * 15 + [None], [1.5] * 15 + ["1.5"], [1.5] * 15 + [{"a": 1.5}],
        ["inference", "training"] * 10, list(range(20)), [1.5] * 16,
    ]
    for value in lists:
        assert store_module._to_json(value) == json.dumps(value, sort_keys=True, default=str)
    # Past its bound the memory starts afresh and the text is still right.
    many = [rng.uniform(-1e6, 1e6) for _ in range(store_module._FLOAT_TEXTS_MAX + 100)]
    for start in range(0, len(many), 1000):
        chunk = many[start:start + 1000]
        assert store_module._to_json(chunk) == json.dumps(chunk)
    assert len(store_module._float_text.__self__) <= store_module._FLOAT_TEXTS_MAX
