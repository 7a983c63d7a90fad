import hashlib
import os
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.checkpoint import (
    HEADER_BYTES,
    MAGIC,
    CheckpointError,
    CheckpointStore,
    Snapshot,
    checkpoint_name,
)
from flight.training.corpus import CharTokenizer


def state_for(step: int) -> dict:
    """A small state with tensors, like a trainer's but fast to write."""
    g = torch.Generator().manual_seed(step)
    return {"step": step, "weights": torch.randn(64, 8, generator=g), "note": f"s{step}"}


def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= mask
    path.write_bytes(bytes(blob))


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_save_then_load_round_trips(tmp_path):
    store = CheckpointStore(tmp_path)
    path = store.save(state_for(7), step=7)
    assert path.name == checkpoint_name(7)
    loaded = store.load_latest()
    assert loaded is not None
    state, info = loaded
    assert info.step == 7 and info.path == path
    assert torch.equal(state["weights"], state_for(7)["weights"])
    assert state["note"] == "s7"


def test_file_layout_matches_the_documented_header(tmp_path):
    store = CheckpointStore(tmp_path)
    snapshot = store.snapshot(state_for(3))
    path = store.persist(snapshot, step=3)
    blob = path.read_bytes()
    # Independent parse of the documented layout: >8s H Q Q 32s, then the payload.
    magic, version, step, length, digest = struct.unpack(">8sHQQ32s", blob[:58])
    assert HEADER_BYTES == 58
    assert (magic, version, step) == (MAGIC, 1, 3)
    assert length == len(blob) - 58 == snapshot.size_bytes
    assert digest == hashlib.sha256(blob[58:]).digest()
    assert digest.hex() == snapshot.sha256_hex == store.verify(path).sha256_hex


def test_snapshot_is_isolated_from_later_changes(tmp_path):
    store = CheckpointStore(tmp_path)
    state = state_for(1)
    original = state["weights"].clone()
    snapshot = store.snapshot(state)
    state["weights"].add_(1.0)  # training goes on while phase 2 is pending
    store.persist(snapshot, step=1)
    loaded, _ = store.load_latest()
    assert torch.equal(loaded["weights"], original)


def corrupt_payload_byte(path: Path) -> None:
    flip_byte(path, HEADER_BYTES + (path.stat().st_size - HEADER_BYTES) // 2)


def truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size - 100)


def bad_magic(path: Path) -> None:
    flip_byte(path, 0, 0x20)


def bad_version(path: Path) -> None:
    flip_byte(path, 9, 0x02)  # low byte of the big-endian version field


def truncated_header(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(HEADER_BYTES - 1)


@pytest.mark.parametrize(
    "damage, reason_words",
    [
        (corrupt_payload_byte, "SHA-256 mismatch"),
        (truncate, "truncated payload"),
        (bad_magic, "bad magic"),
        (bad_version, "unsupported format version"),
        (truncated_header, "truncated header"),
    ],
)
def test_corrupt_newest_is_rejected_and_previous_loaded(tmp_path, damage, reason_words):
    store = CheckpointStore(tmp_path)
    store.save(state_for(10), step=10)
    newest = store.save(state_for(20), step=20)
    damage(newest)

    with pytest.raises(CheckpointError) as excinfo:
        store.verify(newest)
    assert reason_words in excinfo.value.reason

    reader = CheckpointStore(tmp_path)
    loaded = reader.load_latest()
    assert loaded is not None
    state, info = loaded
    assert info.step == 10 and state["step"] == 10
    assert reader.rejected_count == 1
    assert reader.rejected[0][0] == newest
    assert reason_words in reader.rejected[0][1]


def test_header_step_must_match_file_name(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(state_for(1), step=1)
    path = store.save(state_for(2), step=2)
    path.rename(tmp_path / checkpoint_name(5))
    loaded = store.load_latest()
    assert loaded[1].step == 1
    assert "does not match step 5" in store.rejected[0][1]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_single_byte_change_is_detected(data):
    with tempfile.TemporaryDirectory() as directory:
        store = CheckpointStore(Path(directory))
        store.save({"x": torch.arange(6)}, step=1)
        newest = store.save({"x": torch.arange(12)}, step=2)
        offset = data.draw(st.integers(0, newest.stat().st_size - 1), label="offset")
        mask = data.draw(st.integers(1, 255), label="xor mask")
        flip_byte(newest, offset, mask)
        with pytest.raises(CheckpointError):
            store.verify(newest)
        state, info = store.load_latest()
        assert info.step == 1 and torch.equal(state["x"], torch.arange(6))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_truncation_is_detected(data):
    with tempfile.TemporaryDirectory() as directory:
        store = CheckpointStore(Path(directory))
        store.save({"x": torch.arange(6)}, step=1)
        newest = store.save({"x": torch.arange(12)}, step=2)
        length = data.draw(st.integers(0, newest.stat().st_size - 1), label="kept bytes")
        with open(newest, "r+b") as handle:
            handle.truncate(length)
        assert store.load_latest()[1].step == 1
        assert store.rejected_count == 1


def test_nothing_verifies_returns_none_without_raising(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.load_latest() is None
    for step in (1, 2):
        bad_magic(store.save(state_for(step), step=step))
    assert store.load_latest() is None
    assert store.rejected_count == 2


def test_hash_valid_but_unloadable_payload_is_rejected(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(state_for(1), step=1)
    garbage = b"not a torch file"
    store.persist(Snapshot(garbage, hashlib.sha256(garbage).hexdigest()), step=2)
    state, info = store.load_latest()
    assert info.step == 1
    assert "does not load" in store.rejected[0][1]


def test_prunes_to_keep_newest(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    for step in range(1, 6):
        store.save(state_for(step), step=step)
    assert files_in(tmp_path) == [checkpoint_name(s) for s in (3, 4, 5)]


def test_pruning_never_leaves_fewer_than_two_verified(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    store.save(state_for(1), step=1)
    corrupt_payload_byte(store.save(state_for(2), step=2))
    store.save(state_for(3), step=3)
    # keep=2 alone would drop step 1, leaving one verified file (3) and a corrupt one (2).
    names = files_in(tmp_path)
    assert checkpoint_name(1) in names and checkpoint_name(3) in names
    verified = [p for p in store.list_checkpoints() if _verifies(store, p)]
    assert len(verified) >= 2

    corrupt_payload_byte(tmp_path / checkpoint_name(3))
    state, info = store.load_latest()
    assert info.step == 1 and state["step"] == 1
    assert store.rejected_count == 2


def _verifies(store: CheckpointStore, path: Path) -> bool:
    try:
        store.verify(path)
    except CheckpointError:
        return False
    return True


def test_keep_below_two_is_refused(tmp_path):
    with pytest.raises(ValueError, match="keep"):
        CheckpointStore(tmp_path, keep=1)


def test_no_temp_files_left_after_saves(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    for step in range(4):
        store.save(state_for(step), step=step)
    assert all(name.startswith("ckpt-") and name.endswith(".ckpt") for name in files_in(tmp_path))


def test_failed_write_leaves_no_temp_file_and_keeps_old(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    store.save(state_for(1), step=1)

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        store.save(state_for(2), step=2)
    monkeypatch.undo()
    assert files_in(tmp_path) == [checkpoint_name(1)]
    assert store.load_latest()[1].step == 1


def test_stray_temp_files_are_ignored_then_cleaned(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(state_for(1), step=1)
    # A crash mid-persist leaves a partial temp file (here: just a header's worth).
    stray = tmp_path / f".{checkpoint_name(2)}.tmp"
    stray.write_bytes(MAGIC + b"\x00" * 10)
    assert store.list_checkpoints() == [tmp_path / checkpoint_name(1)]
    assert store.load_latest()[1].step == 1
    assert store.rejected_count == 0
    store.save(state_for(3), step=3)
    assert not stray.exists()


def test_tokenizer_vocab_survives_a_checkpoint(tmp_path):
    text = "From fairest creatures we desire increase,\n"
    tokenizer = CharTokenizer(text)
    store = CheckpointStore(tmp_path)
    store.save({"vocab": tokenizer.vocab, "ids": torch.tensor(tokenizer.encode(text))}, step=1)
    state, _ = store.load_latest()
    restored = CharTokenizer.from_vocab(state["vocab"])
    assert restored == tokenizer
    assert restored.decode(state["ids"].tolist()) == text


def test_a_save_older_than_the_rest_is_kept(tmp_path):
    # After a rollback the next save can carry a lower step than files already there.
    store = CheckpointStore(tmp_path, keep=2)
    for step in (10, 11):
        store.save(state_for(step), step=step)
    path = store.save(state_for(5), step=5)
    assert path.exists()
    assert store.verify(path).step == 5
