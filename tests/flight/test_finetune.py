"""Onboard fine-tuning of the assistant's GPT (the training job's "assistant" task): the corpus is
checked with errors naming the example, training starts exactly from the base weights, only the
answers carry loss, held-out loss falls, resume is bit-exact, and state of another run is refused;
the assistant speaks with the newest verified fine-tuned checkpoint."""

import dataclasses

import pytest
import torch

from flight.assistant.model import CheckpointAssistantModel, load_weights
from flight.checkpoint import CheckpointStore
from flight.training.dialogue import DialogueCorpusError, masked_batch, parse_corpus, vocabulary
from flight.training.finetune import (BaseWeights, DialogueData, DialogueTrainer, DialogueTrainerConfig,
                                      assistant_model_from_state, model_from_checkpoint_state)
from flight.training.trainer import Trainer, TrainerConfig
from tests.conftest import TINY_ASSISTANT, tiny_dialogue_corpus

CONFIG = DialogueTrainerConfig(seed=3, batch_size=8, learning_rate=3e-3, eval_batches=1, num_threads=1)


@pytest.fixture
def base(tiny_assistant_weights):
    return BaseWeights.from_payload(load_weights(tiny_assistant_weights))


@pytest.fixture
def data():
    return DialogueData.from_text(tiny_dialogue_corpus(), vocabulary(), TINY_ASSISTANT["block_size"])


@pytest.mark.parametrize("corpus, fault", [
    ("battery 5 %\nQ: How much?\n5 %.\n\n", "example 1: not a dialogue example"),
    ("battery 5 %\nQ: How much?\nA: 5 %.\n\nbattery 6 %\nHow much?\nA: 6 %.\n\n", "example 2: no 'Q: ' line"),
    ("battery 5 %\nQ: How much?\nA: \n\n", "example 1: the answer must be one non-empty line"),
    ("battery 5 %\nQ: Wie viel?\nA: 5 % – genug.\n\n", "example 1: characters the model does not know: '–'"),
    ("\n\n\n\n", "no dialogue examples"),
])
def test_a_bad_corpus_is_refused_naming_the_example(corpus, fault):
    with pytest.raises(DialogueCorpusError, match="dialogues.txt: " + fault):
        parse_corpus(corpus, vocabulary(), "dialogues.txt")


def test_a_corpus_too_small_to_hold_out_validation_is_refused():
    with pytest.raises(ValueError, match="at least 10 examples"):
        DialogueData.from_text(tiny_dialogue_corpus(count=9), vocabulary(), 64)


def test_only_the_answers_and_their_end_of_line_carry_loss(data):
    tokenizer = data.tokenizer
    inputs, targets = masked_batch(data.train, range(5))
    for row in range(5):
        ids, _ = data.train[row]
        text = tokenizer.decode(ids)
        answer = text.rsplit("\nA: ", 1)[1]  # e.g. "12 %.\n"
        taught = tokenizer.decode(targets[row][targets[row] >= 0].tolist())
        assert taught == answer
        # Inputs are the row shifted: position p sees ids[p] and is taught ids[p + 1].
        assert tokenizer.decode(inputs[row, :len(ids) - 1].tolist()) == text[:-1]


def test_every_tenth_example_is_held_out(data):
    examples = parse_corpus(tiny_dialogue_corpus(), vocabulary())
    held_out = {data.tokenizer.decode(ids) for ids, _ in data.val}
    assert held_out == {e.prompt + e.answer + "\n" for e in examples[9::10]}
    assert len(data.train) + len(data.val) == len(examples)


def test_training_starts_exactly_from_the_base_weights(base, data):
    trainer = DialogueTrainer(CONFIG, base, data)
    assert trainer.weights_sha256() == base.weights_sha256  # the weights file's own hash


def test_fine_tuning_lowers_the_held_out_answer_loss(base, data):
    trainer = DialogueTrainer(CONFIG, base, data)
    before = trainer.evaluate()
    for _ in range(60):
        trainer.step()
    after = trainer.evaluate()
    assert after < 0.6 * before, (before, after)


def test_resume_from_a_state_dict_is_bit_exact(base, data):
    straight = DialogueTrainer(CONFIG, base, data)
    losses = [straight.step() for _ in range(6)]

    first = DialogueTrainer(CONFIG, base, data)
    resumed_losses = [first.step() for _ in range(3)]
    state = first.state_dict()
    first.step()  # training on does not change the saved state
    second = DialogueTrainer(CONFIG, base, data)
    second.load_state_dict(state)
    resumed_losses += [second.step() for _ in range(3)]

    assert resumed_losses == losses
    assert second.weights_sha256() == straight.weights_sha256()
    assert second.steps_done == 6


def test_state_of_another_run_or_task_is_refused(base, data):
    state = DialogueTrainer(CONFIG, base, data).state_dict()
    other_corpus = DialogueData.from_text(tiny_dialogue_corpus(offset=1), vocabulary(), 64)
    with pytest.raises(ValueError, match="corpus_sha256"):
        DialogueTrainer(CONFIG, base, other_corpus).load_state_dict(state)
    with pytest.raises(ValueError, match="config"):
        DialogueTrainer(dataclasses.replace(CONFIG, learning_rate=1e-4), base, data).load_state_dict(state)
    text_state = Trainer(TrainerConfig(batch_size=2, block_size=8, n_layer=1, n_head=1, n_embd=8,
                                       num_threads=1), text="abcdefgh" * 20).state_dict()
    with pytest.raises(ValueError, match="task 'text'"):
        DialogueTrainer(CONFIG, base, data).load_state_dict(text_state)


def test_a_checkpoint_of_either_task_gives_its_model_for_inference(base, data):
    trainer = DialogueTrainer(CONFIG, base, data)
    trainer.step()
    model, tokenizer = model_from_checkpoint_state(trainer.state_dict())
    assert tokenizer.vocab == vocabulary()
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trainer.model.state_dict()[name])
    text = "abcdefgh" * 20
    text_trainer = Trainer(TrainerConfig(batch_size=2, block_size=8, n_layer=1, n_head=1, n_embd=8,
                                         num_threads=1), text=text)
    _, text_tokenizer = model_from_checkpoint_state(text_trainer.state_dict(), text)
    assert text_tokenizer.vocab == "abcdefgh"


def test_the_assistant_speaks_with_the_newest_verified_fine_tuned_checkpoint(tmp_path, base, data):
    store = CheckpointStore(tmp_path / "checkpoints")
    fallback_calls = []
    source = CheckpointAssistantModel(store, fallback=lambda: fallback_calls.append(1) or "shipped")
    assert source() == "shipped"  # nothing fine-tuned yet: the shipped weights

    trainer = DialogueTrainer(CONFIG, base, data)
    hashes = {}
    for step in (2, 4):
        while trainer.steps_done < step:
            trainer.step()
        store.save(trainer.state_dict(), step)
        hashes[step] = trainer.weights_sha256()
    generator = source()
    assert generator.checkpoint.step == 4 and "step 4" in generator.name
    assert generator.tokenizer.vocab == vocabulary()
    loaded_sha = DialogueTrainer(CONFIG, base, data)
    loaded_sha.model.load_state_dict(generator.model.state_dict())
    assert loaded_sha.weights_sha256() == hashes[4]
    assert source() is generator  # nothing new: not loaded again

    # A newer checkpoint that is corrupt: rejected, and the assistant keeps the verified one.
    trainer.step()
    newest = store.save(trainer.state_dict(), 5)
    blob = bytearray(newest.read_bytes())
    blob[-10] ^= 0xFF
    newest.write_bytes(bytes(blob))
    assert source() is generator
    assert [path.name for path, _ in store.rejected] == [newest.name]


def test_checkpoints_of_the_text_task_are_not_the_assistants(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    text = "abcdefgh" * 20
    text_trainer = Trainer(TrainerConfig(batch_size=2, block_size=8, n_layer=1, n_head=1, n_embd=8,
                                         num_threads=1), text=text)
    store.save(text_trainer.state_dict(), 0)
    assert CheckpointAssistantModel(store, fallback=lambda: "shipped")() == "shipped"


def test_the_fine_tuned_model_loads_into_the_plain_gpt(base, data):
    trainer = DialogueTrainer(CONFIG, base, data)
    for _ in range(3):
        trainer.step()
    model, _ = assistant_model_from_state(trainer.state_dict())
    inputs, _ = masked_batch(data.val, range(2))
    with torch.no_grad():
        trainer.model.eval()
        fused, _ = trainer.model(inputs)
        plain, _ = model(inputs)
    # Fused attention while training, the plain GPT for inference: the same math up to rounding.
    assert torch.allclose(fused, plain, atol=1e-5)
