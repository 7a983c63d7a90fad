"""The data pipeline: a text file prepared into token files, validated on load, and trained on
bit-identically to the text itself."""

import argparse
import hashlib
import json
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.checkpoint import CheckpointStore
from flight.training.corpus import load_default_corpus
from flight.training.dataset import DatasetError, load_prepared, prepare
from flight.training.trainer import Trainer, TrainerConfig
from sim.scenario import ScenarioError, load_scenario
from tests.conftest import SMALL_MODEL, scenario_with
from tools import prepare_data

SMALL = TrainerConfig(batch_size=8, block_size=32, n_layer=2, n_head=2, n_embd=32, num_threads=1)


@pytest.fixture
def sonnets_file(tmp_path):
    path = tmp_path / "sonnets.txt"
    path.write_bytes(load_default_corpus().encode("utf-8"))
    return path


@pytest.fixture
def prepared(tmp_path, sonnets_file):
    return prepare(sonnets_file, tmp_path / "prepared")


def write_text(tmp_path, text, name="input.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


# --- prepare ------------------------------------------------------------------------------------

def test_prepare_writes_bins_and_meta_by_hand(tmp_path):
    text = "abcab\r\nba" * 10  # 90 characters, vocabulary "\n\rab c"... sorted: '\n', '\r', 'a', 'b', 'c'
    source = write_text(tmp_path, text)
    out = tmp_path / "out"
    prepare(source, out, val_fraction=0.2)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["vocab"] == "\n\rabc" and meta["vocab_size"] == 5
    assert meta["dtype"] == "uint8" and meta["tokenizer"] == "char"
    assert meta["source"] == {"file": "input.txt", "bytes": 90, "characters": 90,
                              "sha256": hashlib.sha256(text.encode()).hexdigest()}
    # The last val_fraction of the text validates: int(90 * 0.8) = 72 train, 18 val.
    assert meta["split"] == {"rule": "tail", "val_fraction": 0.2, "train_tokens": 72, "val_tokens": 18}
    ids = {ch: i for i, ch in enumerate("\n\rabc")}
    train = np.fromfile(out / "train.bin", dtype=np.uint8)
    val = np.fromfile(out / "val.bin", dtype=np.uint8)
    assert train.tolist() == [ids[ch] for ch in text[:72]]
    assert val.tolist() == [ids[ch] for ch in text[72:]]
    assert meta["files"]["train.bin"] == {"tokens": 72, "bytes": 72,
                                          "sha256": hashlib.sha256(train.tobytes()).hexdigest()}
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]  # no temp files


def test_a_large_vocabulary_gets_uint16_little_endian_ids(tmp_path):
    text = "".join(chr(0x100 + i) for i in range(300)) * 2
    dataset = prepare(write_text(tmp_path, text), tmp_path / "wide")
    assert dataset.meta["dtype"] == "uint16" and dataset.vocab_size == 300
    raw = np.fromfile(tmp_path / "wide" / "train.bin", dtype="<u2")
    assert raw[:3].tolist() == [0, 1, 2] and raw.max() == 299
    assert dataset.text() == text


@settings(max_examples=25, deadline=None)
@given(text=st.text(min_size=2, max_size=300), val_fraction=st.floats(min_value=0.05, max_value=0.95))
def test_prepared_tokens_decode_back_to_the_text(tmp_path_factory, text, val_fraction):
    folder = tmp_path_factory.mktemp("prop")
    source = folder / "t.txt"
    source.write_bytes(text.encode("utf-8"))
    n_train = int(len(text) * (1.0 - val_fraction))
    if n_train == 0 or n_train == len(text):
        with pytest.raises(DatasetError, match="too few"):
            prepare(source, folder / "out", val_fraction=val_fraction)
        return
    dataset = prepare(source, folder / "out", val_fraction=val_fraction)
    assert dataset.tokenizer.decode(dataset.train.tolist()) == text[:n_train]
    assert dataset.tokenizer.decode(dataset.val.tolist()) == text[n_train:]
    assert dataset.text() == text


@pytest.mark.parametrize("content, fragment", [(b"", "empty"), (b"ok \xff\xfe bad", "not UTF-8 text")])
def test_prepare_rejects_bad_text_naming_the_file(tmp_path, content, fragment):
    source = tmp_path / "bad.txt"
    source.write_bytes(content)
    with pytest.raises(DatasetError, match=fragment) as err:
        prepare(source, tmp_path / "out")
    assert "bad.txt" in str(err.value)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_prepare_rejects_bad_arguments(tmp_path, sonnets_file):
    with pytest.raises(ValueError, match="val_fraction"):
        prepare(sonnets_file, tmp_path / "out", val_fraction=1.0)
    with pytest.raises(ValueError, match="tokenizer"):
        prepare(sonnets_file, tmp_path / "out", tokenizer="gpt2")
    with pytest.raises(DatasetError, match="cannot read"):
        prepare(tmp_path / "missing.txt", tmp_path / "out")


# --- load_prepared ------------------------------------------------------------------------------

def test_load_memory_maps_the_bins(prepared):
    again = load_prepared(prepared.directory)
    assert isinstance(again.train, np.memmap) and isinstance(again.val, np.memmap)
    assert not again.train.flags.writeable
    assert again.meta == prepared.meta
    assert again.text() == load_default_corpus()


def corrupt_meta(folder, change):
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


def resign(folder, name):
    """Make meta.json's hash of `name` match its (edited) content, so that later checks are reached."""
    digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    corrupt_meta(folder, lambda m: m["files"][name].update(sha256=digest))


def flip_byte(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def set_first_id(path, value):
    blob = bytearray(path.read_bytes())
    blob[0] = value
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage, file, fragment", [
    (lambda d: (d / "meta.json").unlink(), "meta.json", "missing: not a prepared dataset"),
    (lambda d: (d / "meta.json").write_text("{not json"), "meta.json", "corrupt: not valid JSON"),
    (lambda d: (d / "meta.json").write_text("[1, 2]"), "meta.json", "expected a JSON object"),
    (lambda d: corrupt_meta(d, lambda m: m.pop("vocab")), "meta.json", "missing key 'vocab'"),
    (lambda d: corrupt_meta(d, lambda m: m.update(format_version=2)), "meta.json", "unsupported format_version 2"),
    (lambda d: corrupt_meta(d, lambda m: m.update(vocab_size=3)), "meta.json", "vocab mismatch: vocab_size is 3"),
    (lambda d: corrupt_meta(d, lambda m: m.update(vocab=m["vocab"][::-1])), "meta.json", "vocab mismatch"),
    (lambda d: corrupt_meta(d, lambda m: m.update(dtype="int64")), "meta.json", "dtype 'int64' not supported"),
    (lambda d: corrupt_meta(d, lambda m: m["files"]["val.bin"].update(tokens="10")), "meta.json",
     "'files.val.bin.tokens' must be a int"),
    (lambda d: corrupt_meta(d, lambda m: m["split"].update(train_tokens=5)), "meta.json", "differs from split"),
    (lambda d: (d / "val.bin").unlink(), "val.bin", "missing"),
    (lambda d: (d / "train.bin").write_bytes((d / "train.bin").read_bytes()[:-3]), "train.bin", "wrong size"),
    (lambda d: flip_byte(d / "train.bin"), "train.bin", "SHA-256 mismatch"),
    (lambda d: (set_first_id(d / "val.bin", 250), resign(d, "val.bin")), "val.bin",
     "token id 250 outside the vocabulary"),
])
def test_load_rejects_damage_naming_the_file(prepared, damage, file, fragment):
    folder = prepared.directory
    damage(folder)
    with pytest.raises(DatasetError, match=fragment) as err:
        load_prepared(folder)
    assert err.value.path.name == file
    assert str(folder / file) in str(err.value)


def test_load_rejects_a_folder_that_is_not_there(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        load_prepared(tmp_path / "nowhere")


def test_skipping_the_hash_still_checks_sizes(prepared):
    flip_byte(prepared.directory / "train.bin")
    load_prepared(prepared.directory, verify_hashes=False)  # the caller chose not to read every token
    (prepared.directory / "val.bin").write_bytes(b"\x00")
    with pytest.raises(DatasetError, match="wrong size"):
        load_prepared(prepared.directory, verify_hashes=False)


# --- training from a prepared dataset -----------------------------------------------------------

def run(trainer, steps):
    return [trainer.step() for _ in range(steps)]


def test_training_on_the_prepared_corpus_is_bit_identical_to_the_text(prepared):
    from_text = Trainer(SMALL)
    from_bins = Trainer(SMALL, dataset=prepared)
    assert run(from_text, 6) == run(from_bins, 6)
    assert from_bins.weights_sha256() == from_text.weights_sha256()
    assert from_bins.evaluate() == from_text.evaluate()
    assert from_bins.tokenizer == from_text.tokenizer


def test_batches_come_from_the_dataset_split(tmp_path, sonnets_file):
    wide_val = prepare(sonnets_file, tmp_path / "v30", val_fraction=0.3)
    assert len(wide_val.val) == len(load_default_corpus()) - int(len(load_default_corpus()) * 0.7)
    a, b = Trainer(SMALL, dataset=wide_val), Trainer(SMALL)
    run(a, 2), run(b, 2)
    # Same seeded draws over a shorter training split: different batches, different weights.
    assert a.weights_sha256() != b.weights_sha256()


def test_resume_from_a_prepared_dataset_is_bit_exact(tmp_path, prepared):
    straight = Trainer(SMALL, dataset=prepared)
    straight_losses = run(straight, 8)
    first = Trainer(SMALL, dataset=prepared)
    losses = run(first, 3)
    store = CheckpointStore(tmp_path / "ck")
    store.save(first.state_dict(), first.steps_done)
    state, _ = store.load_latest()
    resumed = Trainer.from_state_dict(state, dataset=load_prepared(prepared.directory))
    losses += run(resumed, 5)
    assert losses == straight_losses
    assert resumed.weights_sha256() == straight.weights_sha256()


def test_trainer_takes_a_text_or_a_dataset_not_both(prepared):
    with pytest.raises(ValueError, match="not both"):
        Trainer(SMALL, text="some text " * 20, dataset=prepared)


def test_a_dataset_too_short_for_a_block_is_refused(tmp_path):
    tiny = prepare(write_text(tmp_path, "abcdefghij" * 5), tmp_path / "tiny")
    with pytest.raises(ValueError, match="too short"):
        Trainer(SMALL, dataset=tiny)


# --- scenario key and CLI -----------------------------------------------------------------------

def scenario_file(tmp_path, dataset_line):
    """The starcloud1 preset saved as tmp_path/scenarios/mine.toml with one line added to [training]."""
    preset = (resources.files("sim") / "scenarios" / "starcloud1.toml").read_text()
    assert preset.count("[training]\n") == 1
    path = tmp_path / "scenarios" / "mine.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(preset.replace("[training]\n", f"[training]\n{dataset_line}\n"))
    return path


def test_scenario_dataset_is_relative_to_the_scenario_file(tmp_path, sonnets_file):
    prepare(sonnets_file, tmp_path / "scenarios" / "data" / "sonnets")
    scenario = load_scenario(scenario_file(tmp_path, 'dataset = "data/sonnets"'))
    assert scenario.training["dataset"] == str((tmp_path / "scenarios" / "data" / "sonnets").resolve())
    assert load_scenario("starcloud1").training["dataset"] is None


def test_scenario_with_a_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ScenarioError, match=r"\[training\] dataset 'nope': no such folder"):
        load_scenario(scenario_file(tmp_path, 'dataset = "nope"'))


def test_sil_run_on_the_prepared_corpus_gives_the_default_weights(tmp_path, prepared):
    from sim.sil import SilRun

    hashes = []
    for name, extra in (("text", {}), ("bins", {"dataset": str(prepared.directory)})):
        run_ = SilRun(scenario_with("starcloud1", training={**SMALL_MODEL, **extra}), tmp_path / name)
        try:
            run_.run(90)
            assert run_.training.steps_done > 5
            hashes.append(run_.finish()["weights_sha256"])
        finally:
            run_.close()
    assert hashes[0] == hashes[1]


def cli(argv):
    parser = argparse.ArgumentParser(prog="sunlit")
    prepare_data.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_prepares_and_reports(tmp_path, sonnets_file, capsys):
    assert cli(["prepare", str(sonnets_file), "--out", str(tmp_path / "cli"), "--val-fraction", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "uint8" in out and "train" in out
    assert load_prepared(tmp_path / "cli").meta["split"]["val_fraction"] == 0.2


def test_cli_reports_a_bad_input_without_a_traceback(tmp_path, capsys):
    assert cli(["prepare", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "cli")]) == 2
    assert "sunlit prepare:" in capsys.readouterr().err
    assert cli(["prepare", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "x"), "--val-fraction", "2"]) == 2
    assert "val_fraction" in capsys.readouterr().err
