"""Telemetry dialogues, the fine-tuning loop and the shipped assistant model.

The corpus is checked for what the model is meant to learn (each answer is the template, states
only facts its own context line spells out, and passes the checker), the training rows for where
the loss falls, and the shipped weights against the backends' plain greedy decoder and the
checker on times the model never saw.
"""

from __future__ import annotations

import hashlib
import math
import re

import pytest
import torch

from flight.assistant.answers import check_answer, extract
from flight.assistant.backends import OnboardGptGenerator, TextGenerator
from flight.assistant.model import (
    AssistantModelError,
    default_weights_path,
    last_load_error,
    load_assistant_generator,
    load_weights,
)
from flight.assistant.service import MAX_ANSWER_TOKENS
from flight.training.corpus import CharTokenizer
from tools.dialogues import (
    EXAMPLE_END,
    PRESETS,
    QUICK_CONFIG,
    SPANS_S,
    corpus_text,
    dialogues,
    encode_rows,
    fine_tune,
    sample_times,
    split_example,
    vocabulary,
)

import random


@pytest.fixture(scope="module")
def train_items():
    return dialogues("train", 6, 4)


@pytest.fixture(scope="module")
def eval_items():
    return dialogues("eval", 6, 1)


def test_corpus_is_deterministic_per_seed(train_items):
    again = dialogues("train", 6, 4)
    assert corpus_text(again) == corpus_text(train_items)
    other = dialogues("train", 6, 4, seed=99)
    assert corpus_text(other) != corpus_text(train_items)


def test_examples_are_prompt_answer_and_a_blank_line(train_items):
    text = corpus_text(train_items)
    examples = text.split(EXAMPLE_END)
    assert examples[-1] == "" and len(examples) - 1 == len(train_items)
    for example, item in zip(examples, train_items):
        prompt, answer = split_example(example)
        assert prompt == item.prompt and answer == item.answer
        assert prompt.startswith("[") and prompt.endswith("\nA: ") and "\n" not in answer
    assert {item.preset for item in train_items} == set(PRESETS)
    assert len({item.intent for item in train_items}) >= 5


def _stated(kind: str, value) -> str:
    """How a fact an answer states is spelled in a context line."""
    if kind == "times":
        return f"{value // 60:02d}:{value % 60:02d} UTC"
    if kind == "minutes":
        return "less than a minute" if value == 0 else f"{value} minute"
    if kind == "umbra_now":
        return "eclipse now" if value else ""
    return {"percent": f"{value:.0f}%", "temp": f"{value:.1f} °C", "watts": f"{value:.0f} W",
            "elevation": f"{value:.0f}° elevation", "steps": f"step {value}", "loss": f"loss {value:.2f}",
            "hours": f"{value} hours"}[kind]


def test_every_answer_passes_the_checker_and_copies_its_facts_from_its_context(train_items, eval_items):
    for item in [*train_items, *eval_items]:
        assert check_answer(item.answer, item.answer, item.names).ok
        context = item.prompt[: item.prompt.index("]\nQ: ")]
        facts = extract(item.answer, item.names)
        for name in facts.pop("names"):
            assert name in item.prompt, (name, item.answer)
        assert not facts.pop("stray"), item.answer
        # A state word ("training", "busy") as a word of the context; the help text's words are its own.
        states = facts.pop("states")
        for word in states if item.intent != "help" else ():
            assert re.search(rf"\b{word}\b", context), (word, item.answer, context)
        for kind, values in facts.items():
            for value in values:
                assert _stated(kind, value) in context, (kind, value, item.answer, context)


def test_the_answer_is_the_template_for_the_facts_in_the_prompt(train_items):
    # The prompt is model_prompt(question, facts): rebuilding the template from the same facts
    # is what dialogues() did; here the question must also be answerable from the context alone.
    for item in train_items:
        assert item.prompt.endswith(f"\nQ: {item.question}\nA: ")


def test_training_and_evaluation_times_are_disjoint():
    (train_start, train_end), (eval_start, eval_end) = SPANS_S["train"], SPANS_S["eval"]
    assert train_end <= eval_start or eval_end <= train_start
    train = set(sample_times("train", 500, random.Random(1)))
    evaluation = set(sample_times("eval", 500, random.Random(1)))
    assert not train & evaluation
    assert all(train_start <= t < train_end for t in train) and all(eval_start <= t < eval_end for t in evaluation)


def test_training_rows_put_the_loss_on_the_answers_only(train_items):
    tokenizer = CharTokenizer.from_vocab(vocabulary())
    for per_row in (1, 4):
        rows = encode_rows(train_items, tokenizer, 1024, per_row)
        answers = []
        for ids, spans in rows:
            text = tokenizer.decode(ids)
            assert text.startswith("[")
            answers += [text[start:end] for start, end in spans]
        assert answers == [item.answer + "\n" for item in train_items]
        assert (len(rows) == len(train_items)) == (per_row == 1)


def test_fine_tuning_is_deterministic_and_learns(train_items, eval_items):
    first = fine_tune(QUICK_CONFIG, train_items, eval_items)
    second = fine_tune(QUICK_CONFIG, train_items, eval_items)
    assert first.state_dict.keys() == second.state_dict.keys()
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    assert [p[:2] for p in first.curve] == [p[:2] for p in second.curve]
    assert all(math.isfinite(train) and math.isfinite(val) for _, train, val in first.curve)
    assert first.train_tokens > first.answer_tokens > 0


# -------------------------------------------------------------------------------- the shipped model


@pytest.fixture(scope="module")
def generator():
    gen = load_assistant_generator()
    assert gen is not None, last_load_error()
    return gen


def test_the_shipped_model_is_verified_and_small(generator):
    path = default_weights_path()
    assert path.stat().st_size < 10 * 2**20
    payload = load_weights(path)
    assert payload["vocab"] == vocabulary()
    assert isinstance(generator, TextGenerator) and load_assistant_generator() is generator  # cached


def test_a_corrupt_weights_file_is_refused_with_its_reason(tmp_path):
    data = bytearray(default_weights_path().read_bytes())
    payload = load_weights()
    # Flip a byte inside the first weight tensor's data: the hash check must catch it.
    name = sorted(payload["model"])[0]
    raw = payload["model"][name].numpy().tobytes()
    at = bytes(data).index(raw[:64])
    data[at + 3] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(AssistantModelError, match="SHA-256"):
        load_weights(bad)
    assert load_assistant_generator(bad) is None and "SHA-256" in last_load_error(bad)
    assert load_assistant_generator(tmp_path / "missing.pt") is None
    assert "no such weights file" in last_load_error(tmp_path / "missing.pt")


def test_cached_decoding_says_what_the_plain_greedy_decoder_says(generator, eval_items):
    plain = OnboardGptGenerator(generator.model, generator.tokenizer)
    for item in eval_items[:2]:
        cached = generator.generate(item.prompt, MAX_ANSWER_TOKENS)
        assert cached.endswith("\n") or len(cached) == MAX_ANSWER_TOKENS
        reference = plain.generate(item.prompt, len(cached))
        assert cached == reference


def test_the_shipped_model_answers_held_out_times_right(generator, eval_items):
    passed = 0
    for item in eval_items:
        line = generator.generate(item.prompt, MAX_ANSWER_TOKENS).split("\n", 1)[0].strip()
        passed += check_answer(line, item.answer, item.names).ok
    assert passed >= len(eval_items) - 1, passed


def test_quick_bench_returns_its_figures():
    from tools.bench_assistant import measure_assistant

    result = measure_assistant(quick=True)
    for key in ("assistant_fact_accuracy", "assistant_fact_accuracy_after_fallback", "assistant_answer_p50_ms",
                "assistant_answer_p99_ms", "assistant_train_tokens_per_s"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] >= 0, key
    assert 0.0 <= result["assistant_fact_accuracy"] <= result["assistant_fact_accuracy_after_fallback"] == 1.0
    assert result["assistant_answer_p50_ms"] <= result["assistant_answer_p99_ms"]
    assert result["assistant_loss_curve"] and all(len(p) == 3 for p in result["assistant_loss_curve"])
    assert result["details"]["eval_times"] == 20
