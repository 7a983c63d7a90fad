import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.training.gpt import GPT, GptConfig

SMALL = GptConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=24)


def make_model(config: GptConfig = SMALL, seed: int = 0) -> GPT:
    return GPT(config, generator=torch.Generator().manual_seed(seed))


def tokens(batch: int, seq: int, vocab: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_output_shapes_and_loss():
    model = make_model()
    idx = tokens(3, 10, SMALL.vocab_size)
    logits, loss = model(idx)
    assert logits.shape == (3, 10, SMALL.vocab_size)
    assert loss is None
    logits, loss = model(idx, idx)
    assert loss.shape == ()
    # The loss is the mean cross-entropy of the returned logits, computed independently.
    log_probs = torch.log_softmax(logits, dim=-1)
    expected = -log_probs.gather(-1, idx.unsqueeze(-1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_sequence_longer_than_block_is_rejected():
    model = make_model()
    with pytest.raises(ValueError, match="block_size"):
        model(tokens(1, SMALL.block_size + 1, SMALL.vocab_size))


@settings(max_examples=25, deadline=None)
@given(
    position=st.integers(min_value=0, max_value=SMALL.block_size - 1),
    shift=st.integers(min_value=1, max_value=SMALL.vocab_size - 1),
)
def test_future_tokens_do_not_change_earlier_logits(position, shift):
    model = make_model()
    idx = tokens(2, SMALL.block_size, SMALL.vocab_size)
    changed = idx.clone()
    changed[:, position] = (changed[:, position] + shift) % SMALL.vocab_size
    before, _ = model(idx)
    after, _ = model(changed)
    torch.testing.assert_close(after[:, :position], before[:, :position], rtol=0, atol=1e-6)
    # ...while the changed position itself does see the change.
    assert not torch.allclose(after[:, position], before[:, position])


def test_lm_head_is_tied_to_token_embedding():
    model = make_model()
    assert model.lm_head.weight is model.transformer.wte.weight
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    # Gradient reaches the shared matrix from both uses (input lookup and output head).
    idx = tokens(2, 8, SMALL.vocab_size)
    _, loss = model(idx, idx)
    loss.backward()
    assert model.transformer.wte.weight.grad is not None
    assert model.lm_head.weight.grad is model.transformer.wte.weight.grad


def test_parameter_count_matches_hand_formula():
    config = GptConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    c, v, t, n = config.n_embd, config.vocab_size, config.block_size, config.n_layer
    per_block = (
        2 * c  # ln_1
        + (c * 3 * c + 3 * c)  # qkv
        + (c * c + c)  # attention output projection
        + 2 * c  # ln_2
        + (c * 4 * c + 4 * c)  # mlp up
        + (4 * c * c + c)  # mlp down
    )
    expected = v * c + t * c + n * per_block + 2 * c  # head tied: not counted again
    assert make_model(config).num_parameters() == expected


def test_initialisation_is_seeded_and_leaves_global_rng_alone():
    global_state = torch.random.get_rng_state()
    a, b, c = make_model(seed=5), make_model(seed=5), make_model(seed=6)
    assert torch.equal(torch.random.get_rng_state(), global_state)
    for (name, pa), (_, pb), (_, pc) in zip(
        a.named_parameters(), b.named_parameters(), c.named_parameters()
    ):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.transformer.wte.weight, c.transformer.wte.weight)


def test_initial_prediction_is_near_uniform():
    # Small N(0, 0.02) weights: logits near zero, so the loss on random targets is
    # close to ln(vocab) (a uniform guess). Tying lifts only the logit of the input token.
    model = make_model()
    idx = tokens(4, SMALL.block_size, SMALL.vocab_size, seed=2)
    targets = tokens(4, SMALL.block_size, SMALL.vocab_size, seed=3)
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(SMALL.vocab_size)) < 0.5


def test_generate_shapes_range_and_reproducibility():
    model = make_model()
    prompt = tokens(2, 3, SMALL.vocab_size)
    out1 = model.generate(prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(9))
    out2 = model.generate(prompt, 20, temperature=1.0, generator=torch.Generator().manual_seed(9))
    assert out1.shape == (2, 23)  # longer than block_size: the context is cropped
    assert torch.equal(out1[:, :3], prompt)
    assert torch.equal(out1, out2)
    assert int(out1.min()) >= 0 and int(out1.max()) < SMALL.vocab_size
    assert model.training  # mode restored


def test_greedy_generation_picks_the_argmax():
    model = make_model()
    prompt = tokens(1, 4, SMALL.vocab_size)
    out = model.generate(prompt, 1, temperature=0.0)
    logits, _ = model(prompt)
    assert out[0, -1].item() == logits[0, -1].argmax().item()


def test_sampling_without_generator_is_refused():
    with pytest.raises(ValueError, match="Generator"):
        make_model().generate(tokens(1, 2, SMALL.vocab_size), 1, temperature=1.0)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="n_embd"):
        GptConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="vocab_size"):
        GptConfig(vocab_size=0)
