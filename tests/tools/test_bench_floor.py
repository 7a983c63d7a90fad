"""The transport floor replays the SIL's own traffic and stores exactly what the SIL's store stored.

The floor is only a floor if it does the same work: every captured message crosses ZeroMQ to each
subscription that wants it and becomes the same SQLite row. Checked against the real run's
telemetry.db, row by row, for both replay modes.
"""

from __future__ import annotations

import sqlite3

import pytest

from tools.bench_floor import _array_header, _Replay, capture_traffic

TICKS = 40


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("floor") / "run"
    return capture_traffic("starcloud1", TICKS, run_dir=run_dir), run_dir / "telemetry.db"


def _rows(db_path, table: str, columns: list[str]) -> list[tuple]:
    """The rows after frame zero (which the SIL's constructor runs before the capture starts)."""
    names = ", ".join(["t_ns", "seq", "source", *(f'"{c}"' for c in columns)])
    with sqlite3.connect(db_path) as db:
        return db.execute(f'SELECT {names} FROM "{table}" WHERE t_ns > 0 ORDER BY t_ns, seq, source').fetchall()


def _telemetry_tables(db_path) -> dict[str, list[str]]:
    with sqlite3.connect(db_path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: [r[1] for r in db.execute(f'PRAGMA table_info("{t}")') if r[1] not in ("t_ns", "seq", "source")]
                for t in tables if t.startswith("tlm_")}


@pytest.mark.parametrize("mode", ["per_message", "per_tick"])
def test_replay_stores_the_sil_store_rows(captured, tmp_path, mode):
    traffic, sil_db = captured
    assert len(traffic.ticks) == TICKS and traffic.messages > 5 * TICKS
    assert traffic.store_subscription in traffic.filters and len(traffic.filters) > 5
    replay = _Replay(traffic, tmp_path / "floor.db", mode)
    try:
        wall_s = replay.run(TICKS)
        assert wall_s > 0 and replay.rows == traffic.messages
        sent, received = replay.frames_sent, replay.frames_received
    finally:
        replay.close()
    deliveries = sum(len(w) for tick in replay.wanted for _, w in tick)
    if mode == "per_message":
        assert sent == traffic.messages and received == deliveries
    else:  # one frame per tick to each subscription wanting any of its messages
        assert sent == received == sum(len(tick) for tick in replay.wanted)
    tables = _telemetry_tables(sil_db)
    assert {"tlm_eps", "tlm_power", "tlm_ephemeris"} <= tables.keys()
    for table, columns in tables.items():
        assert _rows(tmp_path / "floor.db", table, columns) == _rows(sil_db, table, columns), table


def test_replay_cycles_with_sequence_numbers_continuing(captured, tmp_path):
    traffic, _ = captured
    replay = _Replay(traffic, tmp_path / "floor.db", "per_message")
    try:
        replay.run(2 * TICKS)
    finally:
        replay.close()
    with sqlite3.connect(tmp_path / "floor.db") as db:
        count, distinct, low, top = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM tlm_eps").fetchone()
    assert count == distinct == top - low + 1 == 2 * sum(1 for tick in traffic.ticks for m in tick if m[0] == "tlm.eps")


def test_unknown_mode_is_refused(captured, tmp_path):
    with pytest.raises(ValueError, match="unknown floor mode"):
        _Replay(captured[0], tmp_path / "x.db", "carrier-pigeon")


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65_535, 65_536])
def test_array_header_is_msgpacks(n):
    import msgpack

    assert _array_header(n) == msgpack.packb([None] * n)[: len(_array_header(n))]
    assert msgpack.unpackb(_array_header(n) + msgpack.packb(None) * n) == [None] * n
