"""The ground side of the store-and-forward downlink: archive what arrives, then acknowledge it.

``GroundArchive`` keeps every received frame in SQLite (WAL, ``synchronous=FULL``: an ack makes
the satellite delete its copy, so the archive's copy must survive a power loss first; a
simulation may pass ``durable=False`` for ``NORMAL``, which still survives a killed process), keyed by
(store_id, frame id) with ``INSERT OR IGNORE``, so a frame sent twice is stored once. A batch is
committed before its ack is returned, which is what lets the onboard store forget it.

Each frame is decoded as a bus message to fill topic, mission time, source and seq columns next
to the raw frame. A frame that does not decode is kept in ``rejects`` with the reason and is still
acknowledged: the satellite would otherwise resend it forever, and its bytes are kept here. A frame
id seen before with different bytes (which only a store that reused ids could produce) is kept in
``rejects`` as a conflict; the first copy stays in ``frames``. A batch that is not a batch at all
is counted and kept in ``rejects`` without an ack (there is nothing to acknowledge).

``GroundReceiver`` serves one connected DEALER socket: it says hello on start and every
``heartbeat_s`` of quiet (the stack's ROUTER can only send to a peer it has heard from), archives
each batch and sends its ack. ``serve_ground_archive`` is the whole ground process.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import zmq

from flight.bus import BusDecodeError, decode_message

_SQL_PARAMS = 500
_REJECTIONS_KEPT = 64
_MAX_ID = 2**63 - 1


def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


class GroundArchive:
    def __init__(self, path: str | Path, *, durable: bool = True) -> None:
        self.path = Path(path)
        db = sqlite3.connect(self.path)
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            db.close()
            raise RuntimeError(f"ground archive {self.path}: journal_mode is {mode!r}, WAL is required")
        db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS frames (store_id TEXT NOT NULL, frame_id INTEGER NOT NULL,"
                   " topic TEXT NOT NULL, t_ns INTEGER NOT NULL, source TEXT NOT NULL, seq INTEGER NOT NULL,"
                   " batch_id INTEGER, frame BLOB NOT NULL, PRIMARY KEY (store_id, frame_id))")
        db.execute("CREATE TABLE IF NOT EXISTS rejects (id INTEGER PRIMARY KEY, store_id TEXT, frame_id INTEGER,"
                   " batch_id INTEGER, reason TEXT NOT NULL, data BLOB, UNIQUE (store_id, frame_id))")
        db.commit()
        self._db = db
        self.batches_received = 0
        self.frames_received = 0
        self.frames_archived = 0  # new frames stored by this object
        self.duplicate_frames = 0  # already archived (a resend): ignored, acknowledged again
        self.rejected_frames = 0  # undecodable or conflicting: kept in rejects, acknowledged
        self.malformed_batches = 0  # not a batch: kept in rejects, not acknowledged
        self.acks = 0
        self._rejections: deque[str] = deque(maxlen=_REJECTIONS_KEPT)

    @property
    def rejections(self) -> list[str]:
        return list(self._rejections)

    def _malformed(self, reason: str, data: Any) -> None:
        self.malformed_batches += 1
        self._rejections.append(reason)
        blob = data if isinstance(data, bytes) else repr(data)[:4096].encode()
        self._db.execute("INSERT INTO rejects (reason, data) VALUES (?, ?)", (reason, blob))
        self._db.commit()

    def receive_batch(self, batch: Any) -> dict | None:
        """Archive a batch and return its ack, or None if it is not a batch (counted, kept)."""
        reason = _batch_problem(batch)
        if reason is not None:
            self._malformed(reason, batch)
            return None
        self.batches_received += 1
        store_id, batch_id, entries = batch["store_id"], batch["batch_id"], batch["frames"]
        good: dict[int, tuple] = {}
        rejects: list[tuple] = []
        ack_ids: list[int] = []
        for index, entry in enumerate(entries):
            self.frames_received += 1
            if type(entry) not in (list, tuple) or len(entry) != 2:
                rejects.append((store_id, None, batch_id, f"entry {index} is not [id, frame]",
                                repr(entry)[:4096].encode()))
                continue
            frame_id, frame = entry
            if type(frame_id) is not int or not 1 <= frame_id <= _MAX_ID:
                rejects.append((store_id, None, batch_id, f"entry {index}: frame id {frame_id!r} is not an int >= 1",
                                repr(entry)[:4096].encode()))
                continue
            ack_ids.append(frame_id)
            if type(frame) is not bytes:
                rejects.append((store_id, frame_id, batch_id, f"frame {frame_id} is {type(frame).__name__}, not bytes",
                                repr(frame)[:4096].encode()))
                continue
            try:
                m = decode_message(frame)
            except BusDecodeError as exc:
                rejects.append((store_id, frame_id, batch_id, f"frame {frame_id}: {exc}", frame))
                continue
            good[frame_id] = (store_id, frame_id, m.topic, m.t_ns, m.source, m.seq, batch_id, frame)
        db = self._db
        if good:
            existing: dict[int, bytes] = {}
            ids = list(good)
            for start in range(0, len(ids), _SQL_PARAMS):
                chunk = ids[start:start + _SQL_PARAMS]
                marks = ",".join("?" * len(chunk))
                existing.update(db.execute(
                    f"SELECT frame_id, frame FROM frames WHERE store_id = ? AND frame_id IN ({marks})",
                    (store_id, *chunk)).fetchall())
            for frame_id, old in existing.items():
                row = good.pop(frame_id)
                if old == row[-1]:
                    self.duplicate_frames += 1
                else:
                    rejects.append((store_id, frame_id, batch_id,
                                    f"frame {frame_id} conflicts with the archived frame of the same id", row[-1]))
            db.executemany("INSERT OR IGNORE INTO frames VALUES (?, ?, ?, ?, ?, ?, ?, ?)", good.values())
            self.frames_archived += len(good)
        if rejects:
            # A reject seen before (a resend) is kept once, like a frame.
            db.executemany("INSERT OR IGNORE INTO rejects (store_id, frame_id, batch_id, reason, data)"
                           " VALUES (?, ?, ?, ?, ?)", rejects)
            self.rejected_frames += len(rejects)
            self._rejections.extend(r[3] for r in rejects[-8:])
        db.commit()  # durable before the ack leaves: the satellite deletes its copy on the ack
        self.acks += 1
        return {"type": "ack", "store_id": store_id, "batch_id": batch_id, "ids": ack_ids}

    def receive_bytes(self, data: bytes) -> bytes | None:
        """Decode a msgpack batch, archive it, and return the encoded ack (None: nothing to ack)."""
        try:
            batch = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_reject_ext)
        except Exception as exc:  # msgpack raises several unrelated types on bad input
            self._malformed(f"undecodable message: {type(exc).__name__}: {exc}", data)
            return None
        if type(batch) is dict and batch.get("type") == "hello":
            return None
        ack = self.receive_batch(batch)
        return None if ack is None else msgpack.packb(ack, use_bin_type=True)

    # -- reading back ---------------------------------------------------------------------------

    def frame_ids(self, store_id: str) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT frame_id FROM frames WHERE store_id = ? ORDER BY frame_id",
                                               (store_id,))]

    def frames(self, store_id: str) -> list[tuple[int, bytes]]:
        return self._db.execute("SELECT frame_id, frame FROM frames WHERE store_id = ? ORDER BY frame_id",
                                (store_id,)).fetchall()

    def reject_rows(self) -> list[tuple]:
        return self._db.execute("SELECT store_id, frame_id, batch_id, reason FROM rejects ORDER BY id").fetchall()

    def stats(self) -> dict[str, int]:
        return {
            "batches_received": self.batches_received,
            "frames_received": self.frames_received,
            "frames_archived": self.frames_archived,
            "duplicate_frames": self.duplicate_frames,
            "rejected_frames": self.rejected_frames,
            "malformed_batches": self.malformed_batches,
            "acks": self.acks,
        }

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None  # type: ignore[assignment]


def _batch_problem(batch: Any) -> str | None:
    if type(batch) is not dict:
        return f"batch must be a map, got {type(batch).__name__}"
    if batch.get("type") != "batch":
        return f"batch type must be 'batch', got {batch.get('type')!r}"
    store_id = batch.get("store_id")
    if type(store_id) is not str or not store_id:
        return f"batch store_id must be a non-empty str, got {store_id!r}"
    if type(batch.get("batch_id")) is not int:
        return f"batch batch_id must be an int, got {batch.get('batch_id')!r}"
    if type(batch.get("frames")) is not list:
        return f"batch frames must be a list, got {type(batch.get('frames')).__name__}"
    return None


class GroundReceiver:
    """Archive batches from one socket (a DEALER connected to the stack's ROUTER) and ack them."""

    def __init__(self, archive: GroundArchive, socket: zmq.Socket, *, heartbeat_s: float = 0.5,
                 name: str = "ground") -> None:
        self.archive = archive
        self._socket = socket
        self.heartbeat_s = heartbeat_s
        self._hello = msgpack.packb({"type": "hello", "ground": name}, use_bin_type=True)
        self.ack_send_failures = 0  # the stack times out and resends: the archive dedups
        self.messages = 0
        self._last_sent = -float("inf")
        self._say_hello()

    def _send(self, data: bytes) -> bool:
        try:
            self._socket.send(data, zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        self._last_sent = time.monotonic()
        return True

    def _say_hello(self) -> None:
        self._send(self._hello)

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms, then archive and ack everything that arrived; returns how many."""
        handled = 0
        if self._socket.poll(timeout_ms, zmq.POLLIN):
            while True:
                try:
                    parts = self._socket.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                handled += 1
                ack = self.archive.receive_bytes(parts[-1])
                if ack is not None and not self._send(ack):
                    self.ack_send_failures += 1
        self.messages += handled
        if time.monotonic() - self._last_sent >= self.heartbeat_s:
            self._say_hello()
        return handled

    def run_until(self, stop: Callable[[], bool], poll_ms: int = 50) -> None:
        while not stop():
            self.poll(poll_ms)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[Callable[[], bool]]:
    """SIGINT and SIGTERM ask the loop to stop at its next poll (within ~50 ms) instead of raising
    KeyboardInterrupt wherever the process happens to be (inside a ZeroMQ or SQLite call), so the
    archive always closes cleanly. Outside the main thread signals cannot be caught: never stops."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return
    previous = {sig: signal.signal(sig, lambda *_: requested.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_ground_archive(endpoint: str, archive_path: str | Path,
                         socket_setup: Callable[[zmq.Socket], None] | None = None,
                         stop: Callable[[], bool] | None = None, *, heartbeat_s: float = 0.5) -> dict[str, int]:
    """Connect to the stack's downlink endpoint and archive until ``stop()`` (or SIGINT/SIGTERM).

    ``socket_setup(socket)`` runs before connecting (set CURVE keys there). Returns the archive's
    counters.
    """
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    archive = None
    try:
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.SNDHWM, 10_000)
        socket.setsockopt(zmq.RCVHWM, 10_000)
        if socket_setup is not None:
            socket_setup(socket)
        archive = GroundArchive(archive_path)
        socket.connect(endpoint)
        receiver = GroundReceiver(archive, socket, heartbeat_s=heartbeat_s)
        with _stop_on_signals() as stopped:
            receiver.run_until(lambda: stopped() or (stop is not None and stop()))
        return archive.stats()
    finally:
        socket.close(linger=0)
        context.term()
        if archive is not None:
            archive.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.ground_archive",
                                     description="Archive a Sunlit stack's downlink and acknowledge it")
    parser.add_argument("endpoint", help="the stack's downlink endpoint, e.g. tcp://127.0.0.1:5560")
    parser.add_argument("--archive", type=Path, required=True, help="SQLite archive file (created if absent)")
    args = parser.parse_args(argv)
    stats = serve_ground_archive(args.endpoint, args.archive)
    print(" ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
