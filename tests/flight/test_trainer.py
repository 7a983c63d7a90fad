import dataclasses
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.checkpoint import CheckpointStore
from flight.training.corpus import CharTokenizer, load_default_corpus, train_val_split
from flight.training.trainer import Trainer, TrainerConfig

# Small enough that a step takes a few milliseconds; the same code path as the default.
# One thread: the contract holds for any fixed count, and on a busy 2-core host two
# threads stall each other (test_default_config_is_deterministic_too covers 2 threads).
SMALL = TrainerConfig(batch_size=8, block_size=32, n_layer=2, n_head=2, n_embd=32, num_threads=1)


def run(config: TrainerConfig, steps: int) -> tuple[Trainer, list[float]]:
    trainer = Trainer(config)
    losses = [trainer.step() for _ in range(steps)]
    return trainer, losses


def assert_optimizers_equal(a: Trainer, b: Trainer) -> None:
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    assert sa["state"].keys() == sb["state"].keys()
    for index, slots in sa["state"].items():
        for slot, value in slots.items():
            assert torch.equal(value, sb["state"][index][slot]), (index, slot)


# --- corpus and tokenizer ---------------------------------------------------------------

def test_default_corpus_is_the_packaged_sonnets():
    text = load_default_corpus()
    assert 10_000 <= len(text.encode()) <= 20_000
    assert "Shall I compare thee to a summer's day?" in text


@given(st.text(min_size=1, max_size=200))
def test_tokenizer_round_trips_any_text(text):
    tokenizer = CharTokenizer(text)
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert CharTokenizer.from_vocab(tokenizer.vocab) == tokenizer


def test_tokenizer_vocab_is_sorted_and_independent_of_text_order():
    assert CharTokenizer("cab").vocab == "abc"
    assert CharTokenizer("cab").encode("abc") == CharTokenizer("bca").encode("abc")
    with pytest.raises(ValueError, match="'z'"):
        CharTokenizer("abc").encode("az")


def test_train_val_split_is_contiguous_head_and_tail():
    train, val = train_val_split(list(range(100)), val_fraction=0.1)
    assert train == list(range(90)) and val == list(range(90, 100))
    with pytest.raises(ValueError):
        train_val_split([1, 2, 3], val_fraction=1.0)


# --- determinism ------------------------------------------------------------------------

def test_same_seed_same_weights_different_seed_different_weights():
    a, losses_a = run(SMALL, 8)
    b, losses_b = run(SMALL, 8)
    c, _ = run(dataclasses.replace(SMALL, seed=1), 8)
    assert a.weights_sha256() == b.weights_sha256()
    assert losses_a == losses_b
    assert a.weights_sha256() != c.weights_sha256()


def test_default_config_is_deterministic_too():
    a, _ = run(TrainerConfig(), 2)
    b, _ = run(TrainerConfig(), 2)
    assert a.weights_sha256() == b.weights_sha256()
    assert a.steps_done == 2


def test_training_never_touches_the_global_rng():
    before = torch.random.get_rng_state()
    trainer, _ = run(SMALL, 3)
    trainer.evaluate()
    assert torch.equal(torch.random.get_rng_state(), before)


def test_evaluate_is_fixed_and_does_not_disturb_training():
    plain, _ = run(SMALL, 6)
    probed = Trainer(SMALL)
    for _ in range(6):
        probed.step()
        first, second = probed.evaluate(), probed.evaluate()
        assert first == second
    assert probed.weights_sha256() == plain.weights_sha256()


def test_weights_hash_sees_a_single_changed_value():
    trainer = Trainer(SMALL)
    original = trainer.weights_sha256()
    assert len(original) == 64
    with torch.no_grad():
        trainer.model.transformer.ln_f.bias[0] += 1e-3
    assert trainer.weights_sha256() != original


# --- resume -----------------------------------------------------------------------------

def test_resume_from_disk_is_bit_identical(tmp_path):
    total_steps, interrupt_at = 12, 5
    uninterrupted, uninterrupted_losses = run(SMALL, total_steps)

    first, losses = run(SMALL, interrupt_at)
    CheckpointStore(tmp_path).save(first.state_dict(), step=first.steps_done)
    del first

    loaded = CheckpointStore(tmp_path).load_latest()
    assert loaded is not None
    state, info = loaded
    assert info.step == interrupt_at
    resumed = Trainer.from_state_dict(state)
    assert resumed.steps_done == interrupt_at
    losses += [resumed.step() for _ in range(total_steps - interrupt_at)]

    assert losses == uninterrupted_losses
    assert resumed.steps_done == uninterrupted.steps_done
    assert resumed.weights_sha256() == uninterrupted.weights_sha256()
    assert_optimizers_equal(resumed, uninterrupted)
    assert resumed.evaluate() == uninterrupted.evaluate()


def test_state_dict_is_a_snapshot_not_a_view():
    trainer, _ = run(SMALL, 2)
    state = trainer.state_dict()
    trainer.step()
    restored = Trainer(SMALL)
    restored.load_state_dict(state)
    again, _ = run(SMALL, 2)
    assert restored.weights_sha256() == again.weights_sha256()


def test_load_state_dict_rejects_another_config():
    state = Trainer(SMALL).state_dict()
    other = Trainer(dataclasses.replace(SMALL, learning_rate=SMALL.learning_rate * 2))
    with pytest.raises(ValueError, match="learning_rate"):
        other.load_state_dict(state)


# --- learning ---------------------------------------------------------------------------

def test_loss_decreases_over_a_hundred_steps():
    trainer, losses = run(SMALL, 100)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


def test_rejects_text_too_short_for_a_block():
    with pytest.raises(ValueError, match="too short"):
        Trainer(SMALL, text="tiny text")


def test_parameter_count_counts_the_tied_head_once():
    trainer = Trainer(SMALL)
    distinct = {id(p): p.numel() for p in trainer.model.parameters()}
    assert trainer.parameter_count == sum(distinct.values())
    head = trainer.model.lm_head.weight.numel()
    in_state_dict = sum(v.numel() for v in trainer.model.state_dict().values())
    assert trainer.parameter_count == in_state_dict - head


def test_a_fresh_process_reproduces_the_weights():
    # Same seed, config and thread count in a new interpreter: same bits (nothing leaks
    # in from process state such as the global RNG or earlier trainers).
    code = (
        "from flight.training.trainer import Trainer, TrainerConfig\n"
        f"t = Trainer(TrainerConfig(**{dataclasses.asdict(SMALL)!r}))\n"
        "for _ in range(3): t.step()\n"
        "print(t.weights_sha256())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    here, _ = run(SMALL, 3)
    assert result.stdout.strip() == here.weights_sha256()
