"""Shared fixtures: scenarios derived from the presets with a few keys changed."""

import copy
import tomllib
from importlib import resources

import pytest
import torch

from sim.scenario import Scenario, parse_scenario


def preset_data(name: str) -> dict:
    return tomllib.loads((resources.files("sim") / "scenarios" / f"{name}.toml").read_text())


def scenario_with(name: str, **sections) -> Scenario:
    """A preset with some keys replaced: scenario_with("starcloud1", training={"n_layer": 1})."""
    data = copy.deepcopy(preset_data(name))
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return parse_scenario(data, source=f"{name}+overrides")


# A small model keeps real-compute tests fast; the code path is the same as the default's.
SMALL_MODEL = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
               "eval_interval_steps": 50, "checkpoint_interval_steps": 100}


@pytest.fixture
def small_starcloud1():
    return scenario_with("starcloud1", training=SMALL_MODEL)


@pytest.fixture
def one_torch_thread():
    """Decoding a tiny model is dominated by thread hand-offs on a shared 2-core host: one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A tiny, untrained GPT in the shipped assistant weights format, over the assistant's vocabulary.
TINY_ASSISTANT = {"block_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 16}


@pytest.fixture(scope="session")
def tiny_assistant_weights(tmp_path_factory):
    from flight.assistant.model import save_weights
    from flight.training.dialogue import vocabulary
    from flight.training.gpt import GPT, GptConfig

    vocab = vocabulary()
    model = GPT(GptConfig(vocab_size=len(vocab), **TINY_ASSISTANT), generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(path, model.state_dict(), vocab, TINY_ASSISTANT, {"note": "untrained, for tests"})
    return path


def tiny_dialogue_corpus(count: int = 60, offset: int = 0) -> str:
    """Short dialogues that fit the tiny model's 64-character block: the answer copies a value."""
    return "".join(f"battery {n % 97} %\nQ: How much battery?\nA: {n % 97} %.\n\n"
                   for n in range(offset, offset + count))


@pytest.fixture(scope="session")
def tiny_dialogues(tmp_path_factory):
    path = tmp_path_factory.mktemp("dialogues") / "dialogues.txt"
    path.write_text(tiny_dialogue_corpus(), encoding="utf-8")
    return path
