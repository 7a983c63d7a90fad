"""Language-model backends: the onboard GPT and a Hugging Face model from a local directory.

The Hugging Face model is a tiny, randomly initialised Llama with a byte-level BPE tokenizer that
the tests build and save themselves: no download, and a socket guard shows nothing is attempted.
Expected continuations come from an independent greedy loop (argmax of a full forward pass per
token, no generate(), no cache), so the tests check the decoding, not numbers it printed.
"""

import os
import socket
import sys

import pytest
import torch

from flight.assistant.backends import (
    HF_MODEL_ENV,
    BackendUnavailable,
    HuggingFaceGenerator,
    OnboardGptGenerator,
    TextGenerator,
    find_local_model,
    resolve_device,
)
from flight.checkpoint import CheckpointStore
from flight.training.trainer import Trainer, TrainerConfig

TEXT = ("Where are you? I am above Africa, over the Middle East in twenty minutes. "
        "The battery is charged, the radiator is cool, and the GPU is training. ") * 4
SENTENCES = ["Where are you? I am above Africa.", "The battery is charged and the GPU is cool.",
             "Shall I compare thee to a summer's day? Thou art more lovely and more temperate."]
SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


# -- the onboard GPT -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trainer():
    t = Trainer(TrainerConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, eval_batches=1), TEXT)
    for _ in range(3):  # a few steps so the weights are not the initial ones
        t.step()
    return t


def greedy_reference_gpt(model, ids, count):
    """Argmax of a full forward pass over the last block_size tokens, one token at a time."""
    ids = list(ids)
    new = []
    with torch.no_grad():
        for _ in range(count):
            logits, _ = model(torch.tensor([ids[-model.config.block_size:]]))
            ids.append(int(logits[0, -1].argmax()))
            new.append(ids[-1])
    return new


def test_onboard_generator_continues_greedily_and_returns_only_the_continuation(trainer):
    gen = OnboardGptGenerator(trainer)
    assert isinstance(gen, TextGenerator) and gen.name == "onboard-gpt"
    prompt = "Where are you?"
    text = gen.generate(prompt, 20)
    expected = trainer.tokenizer.decode(greedy_reference_gpt(trainer.model, trainer.tokenizer.encode(prompt), 20))
    assert text == expected
    assert len(text) == 20  # one token per character, and no end token to stop early
    assert gen.generate(prompt, 20) == text  # deterministic
    assert gen.generate(prompt, 5) == text[:5]  # greedy: a shorter answer is a prefix


def test_onboard_generator_takes_a_bare_model_with_its_tokenizer(trainer):
    bare = OnboardGptGenerator(trainer.model, trainer.tokenizer)
    assert bare.generate("the GPU", 8) == OnboardGptGenerator(trainer).generate("the GPU", 8)
    with pytest.raises(ValueError, match="tokenizer"):
        OnboardGptGenerator(trainer.model)


def test_onboard_prompt_is_cropped_to_the_block_from_the_left(trainer):
    gen = OnboardGptGenerator(trainer)
    long_prompt = TEXT[:100]
    assert gen.encode_prompt(long_prompt) == trainer.tokenizer.encode(long_prompt[-32:])
    assert gen.generate(long_prompt, 10) == gen.generate(long_prompt[-32:], 10)


def test_onboard_unknown_characters_are_a_value_error_naming_them(trainer):
    gen = OnboardGptGenerator(trainer)
    with pytest.raises(ValueError, match=r"'#\$'"):
        gen.generate("Where $ are # you?", 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.generate("Where", 0)
    with pytest.raises(ValueError, match="empty"):
        gen.generate("", 5)


def test_onboard_generator_from_checkpoint_store(tmp_path, trainer):
    store = CheckpointStore(tmp_path)
    assert OnboardGptGenerator.from_checkpoint_store(store, TEXT) is None  # nothing trained yet
    store.save(trainer.state_dict(), step=trainer.steps_done)
    loaded = OnboardGptGenerator.from_checkpoint_store(store, TEXT)
    assert loaded is not None and loaded.checkpoint.step == trainer.steps_done
    assert loaded.generate("above Africa", 16) == OnboardGptGenerator(trainer).generate("above Africa", 16)


# -- a Hugging Face model from a local directory ---------------------------------------------------


def build_tiny_hf_model(directory, chat_template=None):
    """A byte-level BPE tokenizer trained on a few sentences and a 2-layer Llama, seeded, saved offline."""
    pytest.importorskip("transformers")  # only a guard: the test extra installs it
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(SENTENCES, trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng():  # seeded, without disturbing other tests' global generator
        torch.manual_seed(1234)
        LlamaForCausalLM(config).save_pretrained(directory)  # safetensors
    return directory


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    return build_tiny_hf_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    return build_tiny_hf_model(tmp_path_factory.mktemp("tiny-llama-it"), chat_template=CHAT_TEMPLATE)


@pytest.fixture
def no_network(monkeypatch):
    """Every non-loopback connect or name lookup is refused and recorded."""
    attempts = []
    local = ("127.0.0.1", "::1", "localhost")
    real_connect, real_connect_ex, real_getaddrinfo = (socket.socket.connect, socket.socket.connect_ex,
                                                       socket.getaddrinfo)

    def is_local(address):
        return not isinstance(address, tuple) or address[0] in local

    def connect(self, address):
        if not is_local(address):
            attempts.append(repr(address))
            raise ConnectionRefusedError(f"network disabled by the test: {address!r}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if not is_local(address):
            attempts.append(repr(address))
            return 111
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and host not in local:
            attempts.append(f"lookup {host}")
            raise socket.gaierror(f"name lookup disabled by the test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def greedy_reference_hf(model, ids, count, eos_id):
    """Argmax of a full forward pass (no cache, no generate()), stopping after the end token."""
    ids = list(ids)
    new = []
    with torch.no_grad():
        for _ in range(count):
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits
            ids.append(int(logits[0, -1].argmax()))
            new.append(ids[-1])
            if new[-1] == eos_id:
                break
    return new


def test_hf_generator_loads_offline_and_answers_greedily(plain_dir, no_network, monkeypatch):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    import transformers

    seen_env = []
    real_from_pretrained = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen_env.append((os.environ.get("HF_HUB_OFFLINE"),
                         os.environ.get("TRANSFORMERS_OFFLINE")))
        return real_from_pretrained(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    gen = HuggingFaceGenerator(plain_dir, device="cpu")
    assert seen_env == [("1", "1")]  # offline while loading
    assert "HF_HUB_OFFLINE" not in os.environ  # and the caller's environment is restored
    assert isinstance(gen, TextGenerator) and gen.name == f"hf:{plain_dir.name}"
    assert not gen.uses_chat_template and gen.device == "cpu" and gen.dtype == torch.float32
    assert not gen.model.training  # eval mode

    prompt = "Where are you?"
    prompt_ids = gen.tokenizer(prompt)["input_ids"]
    assert gen.encode_prompt(prompt) == prompt_ids
    expected_ids = greedy_reference_hf(gen.model, prompt_ids, 12, gen.tokenizer.eos_token_id)
    assert gen.generate_ids(prompt, 12) == expected_ids
    text = gen.generate(prompt, 12)
    assert isinstance(text, str)
    assert text == gen.tokenizer.decode(expected_ids, skip_special_tokens=True)  # the continuation alone
    assert not text.startswith(prompt)
    assert gen.generate(prompt, 12) == text  # deterministic
    assert no_network == []


@pytest.mark.parametrize("max_new_tokens", [1, 3, 9])
def test_hf_generator_respects_max_new_tokens(plain_dir, max_new_tokens):
    gen = HuggingFaceGenerator(plain_dir, device="cpu")
    eos = gen.tokenizer.eos_token_id
    ids = gen.generate_ids("The battery is", max_new_tokens)
    assert len(ids) <= max_new_tokens
    if eos not in ids:
        assert len(ids) == max_new_tokens  # only the end token stops it early
    assert ids == greedy_reference_hf(gen.model, gen.encode_prompt("The battery is"), max_new_tokens, eos)


def test_hf_pad_token_falls_back_to_eos(plain_dir):
    gen = HuggingFaceGenerator(plain_dir, device="cpu")
    assert gen.tokenizer.pad_token_id is None  # the tiny tokenizer has no pad token
    assert gen._pad_id == gen.tokenizer.eos_token_id


def test_hf_chat_template_wraps_the_prompt_as_one_user_turn(chat_dir, no_network):
    gen = HuggingFaceGenerator(chat_dir, device="cpu")  # "auto": the tokenizer has a template
    assert gen.uses_chat_template
    prompt = "Where are you?"
    # What the template must produce, written out by hand:
    by_hand = gen.tokenizer("<|user|>Where are you?\n<|assistant|>", add_special_tokens=False)["input_ids"]
    user_id, assistant_id = gen.tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>"])
    ids = gen.encode_prompt(prompt)
    assert ids == by_hand and ids[0] == user_id and ids[-1] == assistant_id
    expected = greedy_reference_hf(gen.model, by_hand, 10, gen.tokenizer.eos_token_id)
    assert gen.generate(prompt, 10) == gen.tokenizer.decode(expected, skip_special_tokens=True)

    raw = HuggingFaceGenerator(chat_dir, device="cpu", use_chat_template=False)
    assert raw.encode_prompt(prompt) == gen.tokenizer(prompt)["input_ids"]
    assert no_network == []


def test_hf_chat_template_required_but_missing_is_an_error(plain_dir):
    with pytest.raises(ValueError, match="no chat template"):
        HuggingFaceGenerator(plain_dir, device="cpu", use_chat_template=True)


def test_hf_long_prompts_lose_their_oldest_tokens(plain_dir, chat_dir):
    prompt = " ".join(SENTENCES)
    gen = HuggingFaceGenerator(plain_dir, device="cpu", max_input_tokens=6)
    full = gen.tokenizer(prompt)["input_ids"]
    assert len(full) > 6 and gen.encode_prompt(prompt) == full[-6:]
    assert isinstance(gen.generate(prompt, 4), str)
    # Default limit: the model's context (64 positions) less the tokens to generate.
    default = HuggingFaceGenerator(plain_dir, device="cpu")
    assert default.encode_prompt(prompt * 3, max_new_tokens=14) == default.tokenizer(prompt * 3)["input_ids"][-50:]

    chat = HuggingFaceGenerator(chat_dir, device="cpu", max_input_tokens=8)
    user_id, assistant_id = chat.tokenizer.convert_tokens_to_ids(["<|user|>", "<|assistant|>"])
    ids = chat.encode_prompt(prompt)
    assert len(ids) <= 8 and ids[0] == user_id and ids[-1] == assistant_id  # the turn markers survive


def test_hf_missing_directory_or_config_is_backend_unavailable(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(BackendUnavailable, match="no-such-model"):
        HuggingFaceGenerator(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendUnavailable, match=r"empty has no config\.json"):
        HuggingFaceGenerator(tmp_path / "empty")


def test_hf_files_that_do_not_load_are_backend_unavailable(tmp_path):
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text('{"model_type": "not-a-real-architecture"}')
    with pytest.raises(BackendUnavailable, match="cannot load a causal language model from"):
        HuggingFaceGenerator(tmp_path, device="cpu")


def test_hf_missing_transformers_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    with pytest.raises(BackendUnavailable, match=r"pip install 'sunlit\[hf\]'"):
        HuggingFaceGenerator(tmp_path, device="cpu")


def test_find_local_model(tmp_path, plain_dir):
    assert find_local_model([None, tmp_path / "missing", tmp_path], environ={}) is None
    assert find_local_model([None, tmp_path / "missing", plain_dir], environ={}) == plain_dir
    assert find_local_model([], environ={HF_MODEL_ENV: str(plain_dir)}) == plain_dir
    with pytest.raises(BackendUnavailable, match=HF_MODEL_ENV):
        find_local_model([plain_dir], environ={HF_MODEL_ENV: str(tmp_path / "typo")})


def test_auto_device_is_the_gpu_only_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"
