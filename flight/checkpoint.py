"""Atomic, versioned, hashed checkpoints, written in two phases (after CheckFreq).

Phase 1, `snapshot`: serialise the state to bytes in memory and hash them. It is quick, so
training can go on while phase 2 runs. Phase 2, `persist`: write the bytes to a temp file
in the same directory, fsync it, rename it over the final name, then fsync the directory.
A crash at any point leaves either the old set of checkpoints or the new one, never a
half-written file under a checkpoint name.

File layout (big-endian header, then the payload):

    magic     8 bytes   b"SUNLITCK"
    version   uint16    CHECKPOINT_FORMAT_VERSION
    step      uint64    must match the step in the file name
    length    uint64    payload length in bytes
    sha256    32 bytes  SHA-256 of the payload
    payload   `length` bytes of torch.save output

Every byte is checked before the payload reaches torch.load (magic, version, step against
the file name, length against the file size, hash over the payload), so any corruption or
truncation is rejected with a reason and the previous verified checkpoint is used.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from flight.atomic_file import fsync_directory, write_atomic

MAGIC = b"SUNLITCK"
CHECKPOINT_FORMAT_VERSION = 1
MIN_VERIFIED_KEPT = 2  # never prune below this many verified checkpoints

_HEADER = struct.Struct(">8sHQQ32s")
HEADER_BYTES = _HEADER.size
_STEP_DIGITS = 12
_NAME_RE = re.compile(r"^ckpt-(\d{%d})\.ckpt$" % _STEP_DIGITS)
_TEMP_RE = re.compile(r"^\.ckpt-\d{%d}\.ckpt\.tmp$" % _STEP_DIGITS)


class CheckpointError(Exception):
    """A checkpoint file failed verification; `reason` says what is wrong."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path is not None else reason)
        self.reason = reason
        self.path = path


@dataclass(frozen=True)
class Snapshot:
    """Phase-1 result: the serialised state and its hash, not yet on disk."""

    payload: bytes
    sha256_hex: str

    @property
    def size_bytes(self) -> int:
        return len(self.payload)


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    format_version: int
    payload_bytes: int
    sha256_hex: str


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:0{_STEP_DIGITS}d}.ckpt"


def _temp_name(step: int) -> str:
    return f".{checkpoint_name(step)}.tmp"  # hidden, and never matches _NAME_RE


def _step_from_name(path: Path) -> int | None:
    match = _NAME_RE.match(path.name)
    return int(match.group(1)) if match else None


def _parse(path: Path, blob: bytes) -> tuple[CheckpointInfo, bytes]:
    """Check every header field and the payload hash; return the info and the payload."""
    if len(blob) < HEADER_BYTES:
        raise CheckpointError(
            f"truncated header: file has {len(blob)} bytes, header needs {HEADER_BYTES}", path
        )
    magic, version, step, length, digest = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"bad magic: expected {MAGIC!r}, found {magic!r}", path)
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"unsupported format version {version} (this build reads {CHECKPOINT_FORMAT_VERSION})",
            path,
        )
    name_step = _step_from_name(path)
    if name_step is not None and step != name_step:
        raise CheckpointError(
            f"header step {step} does not match step {name_step} in the file name", path
        )
    actual = len(blob) - HEADER_BYTES
    if actual < length:
        raise CheckpointError(
            f"truncated payload: header says {length} bytes, file holds {actual}", path
        )
    if actual > length:
        raise CheckpointError(
            f"trailing data: header says {length} payload bytes, file holds {actual}", path
        )
    payload = blob[HEADER_BYTES:]
    found = hashlib.sha256(payload).digest()
    if found != digest:
        raise CheckpointError(
            f"SHA-256 mismatch: header {digest.hex()[:16]}..., payload {found.hex()[:16]}...",
            path,
        )
    info = CheckpointInfo(
        path=path,
        step=step,
        format_version=version,
        payload_bytes=length,
        sha256_hex=digest.hex(),
    )
    return info, payload


class CheckpointStore:
    """A directory of checkpoints: save atomically, load the newest one that verifies."""

    def __init__(self, directory: Path, keep: int = 3) -> None:
        if keep < MIN_VERIFIED_KEPT:
            raise ValueError(f"keep must be >= {MIN_VERIFIED_KEPT}, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.directory.mkdir(parents=True, exist_ok=True)
        # Every rejection seen by this store, oldest first: (path, reason).
        self.rejected: list[tuple[Path, str]] = []

    @property
    def rejected_count(self) -> int:
        return len(self.rejected)

    # --- writing -----------------------------------------------------------------------

    def snapshot(self, state: dict[str, Any]) -> Snapshot:
        """Phase 1: serialise in memory and hash. Later changes to `state` do not leak in."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        return Snapshot(payload=payload, sha256_hex=hashlib.sha256(payload).hexdigest())

    def persist(self, snapshot: Snapshot, step: int) -> Path:
        """Phase 2: write durably under the step's name, verify it back, then prune.

        Raises OSError if the write fails (no temp file is left behind) and CheckpointError
        if the written file does not read back intact (it is removed; older ones stay).
        """
        if not 0 <= step < 10**_STEP_DIGITS:
            raise ValueError(f"step must be in [0, 10**{_STEP_DIGITS}), got {step}")
        self._remove_stray_temps()
        final = self.directory / checkpoint_name(step)
        temp = self.directory / _temp_name(step)
        header = _HEADER.pack(
            MAGIC, CHECKPOINT_FORMAT_VERSION, step, len(snapshot.payload),
            bytes.fromhex(snapshot.sha256_hex),
        )
        write_atomic(final, lambda handle: (handle.write(header), handle.write(snapshot.payload)), temp)
        fsync_directory(self.directory)
        try:
            self.verify(final)
        except CheckpointError:
            final.unlink(missing_ok=True)
            raise
        self._prune(known_good=final)
        return final

    def save(self, state: dict[str, Any], step: int) -> Path:
        """Both phases at once."""
        return self.persist(self.snapshot(state), step)

    def _remove_stray_temps(self) -> None:
        # Only a crash mid-persist leaves one; this store is the directory's only writer.
        for path in self.directory.iterdir():
            if _TEMP_RE.match(path.name):
                path.unlink(missing_ok=True)

    def _prune(self, known_good: Path) -> None:
        """Keep the newest `keep` files, plus the newest MIN_VERIFIED_KEPT that verify.

        The second set matters when recent files are corrupt: old good ones are then kept
        even if that means more than `keep` files. The file just written is always kept,
        even if its step is older than the others (a save after a rollback).
        """
        newest_first = self.list_checkpoints()[::-1]
        retained = set(newest_first[: self.keep]) | {known_good}
        verified = 0
        for path in newest_first:
            if verified >= MIN_VERIFIED_KEPT:
                break
            if path != known_good:  # just read back in persist; no need to hash it twice
                try:
                    self.verify(path)
                except CheckpointError:
                    continue
            verified += 1
            retained.add(path)
        removed = False
        for path in newest_first:
            if path not in retained:
                path.unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_directory(self.directory)

    # --- reading -----------------------------------------------------------------------

    def list_checkpoints(self) -> list[Path]:
        """Checkpoint files by step, oldest first (unverified; temp files excluded)."""
        found = [
            (step, path)
            for path in self.directory.iterdir()
            if (step := _step_from_name(path)) is not None and path.is_file()
        ]
        return [path for _, path in sorted(found)]

    def verify(self, path: Path) -> CheckpointInfo:
        """The file's info if it is intact; CheckpointError(reason) if not."""
        return self._read_verified(Path(path))[0]

    def _read_verified(self, path: Path) -> tuple[CheckpointInfo, bytes]:
        try:
            blob = path.read_bytes()
        except OSError as err:
            raise CheckpointError(f"unreadable: {err.strerror or err}", path) from None
        return _parse(path, blob)

    def load_latest(self) -> tuple[dict[str, Any], CheckpointInfo] | None:
        """The newest checkpoint that verifies and loads, or None. Never raises on bad files.

        Each rejected file is recorded in `rejected` with its reason.
        """
        for path in self.list_checkpoints()[::-1]:
            try:
                info, payload = self._read_verified(path)
            except CheckpointError as err:
                self.rejected.append((path, err.reason))
                continue
            try:
                state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - any unpickling failure means "reject"
                self.rejected.append(
                    (path, f"payload verified but does not load: {type(err).__name__}: {err}")
                )
                continue
            if not isinstance(state, dict):
                self.rejected.append(
                    (path, f"payload is a {type(state).__name__}, expected a dict")
                )
                continue
            return state, info
        return None
