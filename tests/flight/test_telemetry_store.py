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
