"""Telemetry-grounded dialogues from the simulator, and the fine-tuning of the assistant's model.

Starcloud-1 fine-tuned its onboard model on telemetry; here the simulator writes the dialogues.
For random mission times of both presets, the facts come the way the flight software sees them:
``tlm.nav`` (SimNav) and ``tlm.ephemeris`` (SimEphemeris, sampled up to 9 s before now, as the
10 s rate group does) from a World flown to that time, through ``read_facts``. The channels a bare
World does not drive (GPU state, temperature and power; training state, steps and loss; battery
charge and power) are drawn from realistic ranges with the seeded generator, consistent with
sunlight (charging in the sun, discharging in eclipse) and with each other (training only on a
busy GPU); now and then a topic is missing, as before its first sample. Each snapshot gets
questions of every intent in several phrasings (passes over known stations, lower-case names, and
stations the satellite does not know); the target is ``template_answer``. An example is

    model_prompt(question, facts) + answer + "\\n\\n"

Training and evaluation times never overlap: training draws from days 0-6 of each preset,
evaluation from days 6-8, with other seeds.

    python -m tools.dialogues corpus --split train --out /tmp/train.txt
    python -m tools.dialogues train --out flight/assistant/data/assistant_gpt.pt
    python -m tools.dialogues eval

Training is a plain deterministic loop over the onboard GPT (flight/training/gpt.py): one example
per row (so an answer always sees its whole prompt), loss on the answer characters and the end of
line only, AdamW with warm-up and cosine decay, seeded generators, fixed threads. Attention uses
torch's fused ``scaled_dot_product_attention`` while training (2-3x faster on this CPU; the same
math up to rounding); the shipped weights load into the plain GPT. This is ground tooling: it
reads the wall clock for its throughput figures.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator, Sequence

from flight.assistant.answers import INTENTS, classify, model_prompt, template_answer
from flight.assistant.facts import Facts, read_facts
from flight.assistant.regions import RegionMap
from flight.bus import Message
from flight.training.dialogue import (EXAMPLE_END, encode_rows, masked_batch, masked_loss, split_example,
                                      use_fused_attention, vocabulary)

NS_PER_S = 1_000_000_000
DAY_S = 86_400
PRESETS = ("starcloud1", "dawn-dusk-650")
# Mission-time spans per split (seconds from the scenario epoch): disjoint by construction.
SPANS_S = {"train": (600, 6 * DAY_S), "eval": (6 * DAY_S, 8 * DAY_S)}
SEEDS = {"train": 1, "eval": 2}
EPHEMERIS_PERIOD_S = 10  # the rate group that samples tlm.ephemeris in SIL

# -------------------------------------------------------------------------------- questions
# Every phrasing is checked against classify() at import: a phrasing listed under an intent is
# sorted into that intent, so the pools say what they test.

PHRASINGS: dict[str, tuple[str, ...]] = {
    "where": (
        "Where are you?", "Where are you now?", "Where are you right now?", "What are you flying over?",
        "What are you flying over right now?", "Where are we?", "What's your location?",
        "What is your current position?", "What are you above right now?", "Where is the satellite?",
        "Where will you be next?", "where are you", "Tell me your location.", "Where are you flying?",
    ),
    "eclipse": (
        "When is the next eclipse?", "When do you go into the shadow?", "When is the next sunset?",
        "When will it get dark?", "Are you in eclipse?", "When does the next eclipse start?",
        "How long until the eclipse?", "When is sunrise?", "Are you in the Earth's shadow?",
        "When do you see the sun again?", "Are you in sunlight?", "eclipse?",
    ),
    "battery": (
        "How much battery do you have?", "What is your battery level?", "How charged is your battery?",
        "What's the state of charge?", "How much energy is left?", "Battery status?",
        "How much power left?", "Is the battery charging?", "battery", "How full is the battery?",
    ),
    "gpu": (
        "How hot is the GPU?", "What is the GPU temperature?", "How warm is your GPU?", "Is the GPU on?",
        "What is the GPU doing?", "GPU status?", "How is the GPU?", "What's the temperature of your H100?",
        "Is your GPU running hot?", "gpu temp", "How cold is the GPU?",
    ),
    "pass": (
        "When is the next pass?", "When is the next ground station pass?", "When can you downlink?",
        "When is your next contact?", "When do you talk to the ground next?", "Next pass?",
        "When is the next downlink?",
    ),
    "training": (
        "What are you training?", "How is the training going?", "What is the training loss?",
        "What are you learning?", "Training status?", "How many steps have you trained?",
        "Tell me about your model.", "Are you training?",
    ),
    "help": (
        "Tell me a joke", "Hello", "Hi!", "What can you do?", "Who are you?", "Help", "What can I ask you?",
        "Good morning", "Thanks!", "What is your name?",
    ),
}
# Pass questions that name a station; {s} is a known or an unknown station.
STATION_PHRASINGS = (
    "When is the next pass over {s}?", "When do you pass over {s}?", "When can you talk to {s}?",
    "When is your next contact with {s}?", "Next pass over {s}?", "When will you pass over {s}?",
    "When is the next downlink to {s}?", "When is {s} in contact?",
)
# Only these say "over/at/from <Name>", the shape the template reads as a named station: an
# unknown name in them is answered "I don't know that ground station".
UNKNOWN_STATION_PHRASINGS = (
    "When is the next pass over {s}?", "When do you pass over {s}?", "Next pass over {s}?",
    "When will you pass over {s}?", "When is the next contact at {s}?",
)
UNKNOWN_STATIONS = (
    "Kiruna", "Fairbanks", "Hawaii", "Perth", "Bangalore", "Madrid", "Canberra", "Goldstone", "Tokyo",
    "Inuvik", "Punta Arenas", "Malindi", "Kourou", "Weilheim", "Troll", "Singapore", "Awarua",
    "Mauritius", "Dubai", "Hobart", "Wallops", "Santiago", "Hartebeesthoek", "Dongara", "Svalbard",
    "McMurdo", "Alaska", "Fucino",
)
# How often each intent is asked in training (passes name stations: the most to learn).
FACT_INTENTS = [intent for intent in INTENTS if intent != "help"]
TRAIN_INTENT_WEIGHTS = {"where": 3, "eclipse": 3, "battery": 2, "gpu": 2, "pass": 5, "training": 2, "help": 1}


def _check_phrasings() -> None:
    for intent, pool in PHRASINGS.items():
        for question in pool:
            if classify(question) != intent:
                raise AssertionError(f"phrasing {question!r} is sorted into {classify(question)!r}, not {intent!r}")
    for pool in (STATION_PHRASINGS, UNKNOWN_STATION_PHRASINGS):
        for question in pool:
            if classify(question.format(s="Nowhere")) != "pass":
                raise AssertionError(f"station phrasing {question!r} is not a pass question")


_check_phrasings()


def ask(intent: str, facts: Facts, rng: random.Random) -> str:
    """A question of ``intent`` about this snapshot, in one of its phrasings."""
    if intent != "pass" or not facts.stations or rng.random() < 0.3:
        return rng.choice(PHRASINGS[intent])
    if rng.random() < 0.2:
        unknown = [s for s in UNKNOWN_STATIONS if s.lower() not in {k.lower() for k in facts.stations}]
        return rng.choice(UNKNOWN_STATION_PHRASINGS).format(s=rng.choice(unknown))
    station = rng.choice(facts.stations)
    if rng.random() < 0.15:
        station = station.lower()  # names are matched without regard to case
    return rng.choice(STATION_PHRASINGS).format(s=station)


# -------------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class Dialogue:
    preset: str
    t_s: int
    intent: str
    question: str
    prompt: str
    answer: str
    names: tuple[str, ...]  # region and station names the checker looks for

    @property
    def text(self) -> str:
        return self.prompt + self.answer + EXAMPLE_END


def _plant_telemetry(rng: random.Random, capacity_wh: float, max_charge_w: float, max_discharge_w: float,
                     in_umbra: bool) -> dict[str, dict[str, Any] | None]:
    """The channels a bare World does not drive, drawn from realistic ranges."""
    gpu_state = rng.choices(("off", "booting", "idle", "busy"), weights=(25, 5, 25, 45))[0]
    if gpu_state == "off":
        gpu = {"state": "off", "power_w": 0.0, "temp_c": None}
        die_c = rng.uniform(-25.0, 40.0)
    else:
        temp_lo, temp_hi, power_lo, power_hi = {"booting": (0.0, 45.0, 60.0, 120.0), "idle": (15.0, 55.0, 70.0, 110.0),
                                                "busy": (35.0, 88.0, 180.0, 700.0)}[gpu_state]
        die_c = rng.uniform(temp_lo, temp_hi)
        gpu = {"state": gpu_state, "power_w": rng.uniform(power_lo, power_hi), "temp_c": die_c}
    thermal = {"gpu_die_temp_c": die_c + rng.gauss(0.0, 0.2)}

    soc = 1.0 if not in_umbra and rng.random() < 0.1 else rng.uniform(0.28, 1.0)
    if in_umbra:
        power_w = -rng.uniform(60.0, max_discharge_w)
    elif soc >= 0.999 and rng.random() < 0.7:
        power_w = rng.uniform(-0.9, 0.9)  # full: the array carries the loads, the battery rests
    elif rng.random() < 0.2:
        power_w = -rng.uniform(5.0, max_discharge_w / 2)  # the GPU draws more than the array gives
    else:
        power_w = rng.uniform(1.0, max_charge_w)
    eps = {"battery_soc": soc, "battery_capacity_wh": capacity_wh, "battery_power_w": power_w}

    training: dict[str, Any] | None
    if rng.random() < 0.05:
        training = None
    else:
        state = ("training" if rng.random() < 0.85 else "waiting") if gpu_state == "busy" else \
            rng.choice(("waiting", "preempted"))
        steps = 0 if rng.random() < 0.05 else int(10 ** rng.uniform(0.0, 5.3))
        training = {"state": state, "steps": steps, "loss": None if steps == 0 else rng.uniform(0.9, 4.3)}
    # A topic not sampled yet (the first seconds after boot) now and then.
    missing = lambda p: rng.random() < p  # noqa: E731
    return {"tlm.eps": None if missing(0.02) else eps,
            "tlm.gpu": None if missing(0.02) else gpu,
            "tlm.thermal": None if missing(0.5) and gpu_state != "off" else thermal,
            "tlm.training": training}


class OrbitView:
    """The world's orbit alone, at any mission time: what SimNav and SimEphemeris read from a World
    (its TrackBuffer, built the way World builds it), without flying the plant models there second
    by second. Set ``t_s`` to jump."""

    def __init__(self, scenario: Any) -> None:
        from sim.track_buffer import TrackBuffer
        from sim.world import make_propagator

        self.scenario = scenario
        self.step_s: int = scenario.simulation["step_s"]
        self.orbit = TrackBuffer(make_propagator(scenario), self.step_s)
        self.t_s = 0

    @property
    def sample(self) -> tuple[Any, int]:
        i = self.orbit.index(self.t_s)  # may move the window: take the track after it
        return self.orbit.track, i

    def next_umbra(self) -> tuple[float, float] | None:
        return self.orbit.next_umbra(self.t_s)


def snapshots(preset: str, times_s: Sequence[int], rng: random.Random,
              regions: RegionMap | None = None) -> Iterator[tuple[int, Facts]]:
    """(t_s, Facts) at each of the ``times_s`` of ``preset``."""
    from hal.sim_backends import SimNav
    from hal.sim_ephemeris import SimEphemeris
    from sim.scenario import load_scenario

    regions = regions if regions is not None else RegionMap.load()
    scenario = load_scenario(preset)
    view = OrbitView(scenario)
    nav, ephemeris = SimNav(view), SimEphemeris(view)  # type: ignore[arg-type]  # the parts of World they read
    epoch = scenario.epoch_utc
    battery = scenario.battery

    def utc_at(t_ns: int) -> datetime:
        return epoch + timedelta(microseconds=t_ns // 1000)

    for t_s in times_s:
        lag_s = rng.randrange(EPHEMERIS_PERIOD_S)
        if t_s - lag_s < 0:
            raise ValueError(f"mission time {t_s} s is before the ephemeris could have been sampled")
        view.t_s = t_s - lag_s
        latest = {"tlm.ephemeris": Message("tlm.ephemeris", 0, view.t_s * NS_PER_S, "ephemeris", ephemeris.read())}
        view.t_s = t_s
        nav_body = nav.read()
        latest["tlm.nav"] = Message("tlm.nav", 0, t_s * NS_PER_S, "nav", nav_body)
        plant = _plant_telemetry(rng, battery["capacity_wh"], battery["max_charge_w"], battery["max_discharge_w"],
                                 nav_body["in_umbra"])
        for topic, body in plant.items():
            if body is not None:
                latest[topic] = Message(topic, 0, t_s * NS_PER_S, topic.split(".")[1], body)
        if rng.random() < 0.01:
            del latest["tlm.nav"]
        if rng.random() < 0.01:
            del latest["tlm.ephemeris"]
        yield t_s, read_facts(latest, t_s * NS_PER_S, utc_at, regions)


def sample_times(split: str, count: int, rng: random.Random) -> list[int]:
    """``count`` distinct mission times (s) in the split's span, increasing, at least 20 s apart."""
    start_s, end_s = SPANS_S[split]
    slots = rng.sample(range(start_s // 20, end_s // 20), count)
    return sorted(20 * slot + rng.randrange(10, 20) for slot in slots)


def dialogues(split: str, times_per_preset: int, questions_per_time: int = 1, *, seed: int | None = None,
              presets: Sequence[str] = PRESETS, regions: RegionMap | None = None,
              region_swap_share: float = 0.0) -> list[Dialogue]:
    """Dialogues for ``split`` ("train" or "eval"): ``questions_per_time`` questions (of different
    intents) at each of ``times_per_preset`` random times of each preset. Training asks every
    intent, weighted by TRAIN_INTENT_WEIGHTS; evaluation only the six whose answers state facts
    (the help text has none to get wrong), uniformly. ``region_swap_share``: the share of training
    where-dialogues whose regions are redrawn uniformly from the map (``_swap_regions``)."""
    if split not in SPANS_S:
        raise ValueError(f"split must be one of {', '.join(SPANS_S)}, got {split!r}")
    regions = regions if regions is not None else RegionMap.load()
    region_names = tuple(r.name for r in regions.regions)
    seed = SEEDS[split] if seed is None else seed
    out: list[Dialogue] = []
    intents = list(TRAIN_INTENT_WEIGHTS)
    for preset in presets:
        rng = random.Random(f"{seed}:{split}:{preset}")
        times = sample_times(split, times_per_preset, rng)
        for t_s, facts in snapshots(preset, times, rng, regions):
            if split == "train":
                weights = [TRAIN_INTENT_WEIGHTS[i] for i in intents]
                chosen: list[str] = []
                while len(chosen) < min(questions_per_time, len(intents)):
                    intent = rng.choices(intents, weights)[0]
                    if intent not in chosen:
                        chosen.append(intent)
            else:
                chosen = rng.sample(FACT_INTENTS, min(questions_per_time, len(FACT_INTENTS)))
            for intent in chosen:
                question = ask(intent, facts, rng)
                said = facts
                if region_swap_share > 0 and split == "train" and intent == "where" and said.region is not None \
                        and rng.random() < region_swap_share:
                    said = _swap_regions(said, regions, rng)
                out.append(Dialogue(preset, t_s, classify(question), question, model_prompt(question, said),
                                    template_answer(question, said), region_names + said.stations))
    return out


def _swap_regions(facts: Facts, regions: RegionMap, rng: random.Random) -> Facts:
    """The snapshot with its region (and next region) drawn uniformly from the map: orbits pass
    over small seas rarely, and a name seen a handful of times is copied less reliably than one
    seen thousands of times. The answer copies names from its context whatever they are, so
    counterfactual pairs teach copying, not geography (evaluation uses true snapshots only)."""
    here = rng.choice(regions.regions)
    if facts.next_region is None:
        return replace(facts, region=here)
    there = rng.choice([r for r in regions.regions if r != here])
    return replace(facts, region=here, next_region=there)


def corpus_text(items: Sequence[Dialogue]) -> str:
    return "".join(d.text for d in items)


# -------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class FineTuneConfig:
    """How the shipped model is built (the defaults are its configuration)."""

    seed: int = 0
    train_times_per_preset: int = 3000  # x 4 questions x 2 presets = 24,000 dialogues
    questions_per_time: int = 4
    # Of the where-dialogues, the share with regions redrawn (_swap_regions). 0.5 (and 4,500 steps)
    # got every region right on the 600 held-out questions but lost more to repeated digits ("455"
    # said "45"): 98.2 % against 99.2 % for the shipped configuration, which uses none.
    region_swap_share: float = 0.0
    val_times_per_preset: int = 40
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256  # the longest prompt + answer is ~230 characters
    batch_size: int = 32
    answers_per_row: int = 1
    steps: int = 3000
    learning_rate: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 60
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 250
    num_threads: int = 1
    fast_attention: bool = True
    wire_previous_token: bool = True  # start layer 0 head 0 as a previous-token head


QUICK_CONFIG = FineTuneConfig(train_times_per_preset=10, questions_per_time=2, val_times_per_preset=3, n_layer=1,
                              n_head=2, n_embd=32, batch_size=2, steps=4, warmup_steps=1, eval_every=2,
                              wire_previous_token=False)  # the wired head needs n_embd 128, 4 heads


@dataclass
class FineTuneResult:
    config: FineTuneConfig
    vocab: str
    state_dict: dict[str, Any]
    curve: list[tuple[int, float, float | None]] = field(default_factory=list)  # (step, train, val)
    train_tokens: int = 0  # every position of every row the model ran on
    answer_tokens: int = 0  # the positions that carried loss
    train_wall_s: float = 0.0
    corpus_sha256: str = ""
    corpus_examples: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.train_tokens / self.train_wall_s if self.train_wall_s > 0 else float("nan")


# Frequencies (rad per character) of the position code that the wired previous-token head reads:
# 16 incommensurate values in [0.3, 3], chosen (seeded search) so that sum_j cos(w_j d) is at most
# ~6.7 for any offset 1 <= d <= 1024 against 16 at d = 0: "one character back" stands out sharply.
PREV_TOKEN_FREQS = (0.5077, 0.5593, 0.694, 1.0014, 1.0764, 1.1777, 1.4088, 1.4348, 1.5385, 1.8351, 2.034,
                    2.0391, 2.1464, 2.699, 2.8321, 2.9216)


def wire_previous_token_head(model: Any, generator: Any, amplitude: float = 0.04, sharpness: float = 3.0,
                             out_scale: float = 0.02) -> None:
    """Start layer 0, head 0 as a previous-token head, the slowest part of copying to learn.

    Copying a value out of the context ("induction") needs two heads: one that tells each position
    which character came before it, and one that then finds where the current character followed
    it before and copies what came next. The first is what a small model spends thousands of steps
    finding (the long plateau of the loss). Here the residual stream starts split in three: token
    embeddings in the first half, a position code of sinusoids at PREV_TOKEN_FREQS in the next
    quarter, and an empty last quarter where head 0 of layer 0 writes a projection of the
    previous character (its query is the position code rotated one character back, its key the
    position code). Everything stays trainable; the GPT class is unchanged and the weights load
    into it as any others.
    """
    import torch

    channels = model.config.n_embd
    head_dim = channels // model.config.n_head
    tok_dims, pos_dims = channels // 2, 2 * len(PREV_TOKEN_FREQS)
    if channels // 4 != pos_dims or head_dim != pos_dims:
        raise ValueError(f"the wired head needs n_embd = 4 * {pos_dims} and head_dim = {pos_dims} "
                         f"(got n_embd {channels}, head_dim {head_dim})")
    pos = slice(tok_dims, tok_dims + pos_dims)
    prev = slice(tok_dims + pos_dims, channels)
    freqs = torch.tensor(PREV_TOKEN_FREQS, dtype=torch.float64)
    t = model.transformer
    with torch.no_grad():
        t.wte.weight[:, tok_dims:] = 0.0
        positions = torch.arange(model.config.block_size, dtype=torch.float64).unsqueeze(1)
        code = torch.zeros(model.config.block_size, pos_dims, dtype=torch.float64)
        code[:, 0::2] = torch.sin(positions * freqs)
        code[:, 1::2] = torch.cos(positions * freqs)
        t.wpe.weight.zero_()
        t.wpe.weight[:, pos] = (amplitude * code).float()
        attn = t.h[0].attn
        w = attn.c_attn.weight  # rows: q (C), k (C), v (C); head 0 = the first head_dim rows of each
        w[0:head_dim].zero_()
        w[channels:channels + head_dim].zero_()
        w[2 * channels:2 * channels + head_dim].zero_()
        attn.c_attn.bias[0:head_dim].zero_()
        # Query: each (sin, cos) pair rotated by -w, i.e. the code of the position one back.
        rotate = torch.zeros(pos_dims, pos_dims, dtype=torch.float64)
        for j, omega in enumerate(PREV_TOKEN_FREQS):
            c, s = math.cos(omega), math.sin(omega)
            rotate[2 * j, 2 * j], rotate[2 * j, 2 * j + 1] = c, -s
            rotate[2 * j + 1, 2 * j], rotate[2 * j + 1, 2 * j + 1] = s, c
        w[0:head_dim, pos] = (sharpness * rotate).float()
        w[channels:channels + head_dim, pos] = torch.eye(pos_dims)
        # Value: a random orthonormal projection of the token half; output: into the empty quarter.
        basis, _ = torch.linalg.qr(torch.randn(tok_dims, head_dim, generator=generator, dtype=torch.float64))
        w[2 * channels:2 * channels + head_dim, :tok_dims] = basis.T.float()
        proj = attn.c_proj.weight  # (out C, in C); head 0's outputs are inputs 0..head_dim
        proj[:, 0:head_dim] = 0.0
        proj[prev, :] = 0.0
        proj[prev, 0:head_dim] = out_scale * torch.eye(head_dim)


def _lr(config: FineTuneConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    floor = config.learning_rate * config.min_lr_ratio
    return floor + 0.5 * (config.learning_rate - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))


def fine_tune(config: FineTuneConfig, train_items: Sequence[Dialogue] | None = None,
              val_items: Sequence[Dialogue] | None = None, progress: Any = None,
              on_eval: Any = None) -> FineTuneResult:
    """Train the onboard GPT from scratch on telemetry dialogues; deterministic per config.

    ``progress(line)`` gets a line per evaluation; ``on_eval(step, model, tokenizer)`` is called
    there too (e.g. to measure fact accuracy along the way)."""
    import torch

    from flight.training.corpus import CharTokenizer
    from flight.training.gpt import GPT, GptConfig
    from flight.training.trainer import configure_determinism, derive_seed

    if train_items is None:
        train_items = dialogues("train", config.train_times_per_preset, config.questions_per_time,
                                region_swap_share=config.region_swap_share)
    if val_items is None:
        # Validation loss on held-out times (the evaluation span, its own seed).
        val_items = dialogues("eval", config.val_times_per_preset, 1, seed=SEEDS["eval"] + 100)
    configure_determinism(config.num_threads)
    tokenizer = CharTokenizer.from_vocab(vocabulary())
    corpus = corpus_text(train_items)
    train = encode_rows(train_items, tokenizer, config.block_size, config.answers_per_row)
    val = encode_rows(val_items, tokenizer, config.block_size)
    model = GPT(GptConfig(vocab_size=tokenizer.vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                          n_head=config.n_head, n_embd=config.n_embd),
                generator=torch.Generator().manual_seed(derive_seed(config.seed, "model_init")))
    if config.wire_previous_token:
        wire_previous_token_head(model, torch.Generator().manual_seed(derive_seed(config.seed, "wiring")))
    if config.fast_attention:
        for block in model.transformer.h:
            use_fused_attention(block.attn)
    params = [p for _, p in sorted(model.named_parameters())]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
        lr=config.learning_rate, betas=(0.9, 0.99), foreach=False)
    batches = torch.Generator().manual_seed(derive_seed(config.seed, "batches"))

    @torch.no_grad()
    def val_loss() -> float:
        model.eval()
        total, count = 0.0, 0
        for start in range(0, len(val), config.batch_size):
            inputs, targets = masked_batch(val, range(start, min(len(val), start + config.batch_size)))
            n = int((targets >= 0).sum())
            total += masked_loss(model, inputs, targets).item() * n
            count += n
        model.train()
        return total / count

    result = FineTuneResult(config, tokenizer.vocab, {}, corpus_sha256=hashlib.sha256(corpus.encode()).hexdigest(),
                            corpus_examples=len(train_items))
    model.train()
    running, running_n = 0.0, 0
    for step in range(config.steps):
        indices = torch.randint(len(train), (config.batch_size,), generator=batches).tolist()
        inputs, targets = masked_batch(train, indices)
        for group in optimizer.param_groups:
            group["lr"] = _lr(config, step)
        t0 = time.perf_counter()
        loss = masked_loss(model, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=False)
        optimizer.step()
        result.train_wall_s += time.perf_counter() - t0
        result.train_tokens += inputs.numel()
        result.answer_tokens += int((targets >= 0).sum())
        running += loss.item()
        running_n += 1
        done = step + 1
        if done % config.eval_every == 0 or done == config.steps:
            point = (done, running / running_n, val_loss())
            result.curve.append(point)
            running, running_n = 0.0, 0
            if progress is not None:
                progress(f"step {done}/{config.steps}  train {point[1]:.4f}  val {point[2]:.4f}  "
                         f"{result.tokens_per_s:,.0f} tok/s")
            if on_eval is not None:
                on_eval(done, model, tokenizer)
                model.train()
    result.state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return result


# -------------------------------------------------------------------------------- CLI


def _eval_report(path: Path | None, times_per_preset: int, progress: bool = True) -> int:
    from tools.bench_assistant import evaluate_model

    report = evaluate_model(times_per_preset=times_per_preset, path=path,
                            progress=(lambda line: print(line, file=sys.stderr, flush=True)) if progress else None)
    print(f"fact accuracy before fallback: {report.accuracy:.4f} ({report.passed}/{report.total}); "
          f"after fallback: {report.accuracy_after_fallback:.4f}")
    for key, (passed, total) in sorted(report.by_intent.items()):
        print(f"  {key:10s} {passed}/{total}")
    for key, (passed, total) in sorted(report.by_preset.items()):
        print(f"  {key:14s} {passed}/{total}")
    print(f"latency p50 {report.p50_ms:.1f} ms, p99 {report.p99_ms:.1f} ms ({report.num_threads} thread(s))")
    for failure in report.failures[:20]:
        print(f"  FAIL {failure}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.dialogues", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    corpus = sub.add_parser("corpus", help="write a dialogue corpus as plain text")
    corpus.add_argument("--split", choices=tuple(SPANS_S), default="train")
    corpus.add_argument("--times", type=int, default=None, help="random times per preset")
    corpus.add_argument("--questions", type=int, default=None, help="questions per time")
    corpus.add_argument("--seed", type=int, default=None)
    corpus.add_argument("--out", type=Path, required=True)
    train = sub.add_parser("train", help="fine-tune the onboard GPT on dialogues and write its weights")
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--steps", type=int, default=None)
    train.add_argument("--quick", action="store_true", help="a tiny model for a few steps (smoke test)")
    evaluate = sub.add_parser("eval", help="fact accuracy and latency of a weights file on held-out times")
    evaluate.add_argument("--weights", type=Path, default=None,
                          help="a weights file or the checkpoint folder of an assistant fine-tuning run "
                               "(sunlit sim --train assistant); default: the shipped model")
    evaluate.add_argument("--times", type=int, default=300, help="held-out times per preset")
    args = parser.parse_args(argv)

    if args.command == "corpus":
        default = FineTuneConfig()
        times = args.times or (default.train_times_per_preset if args.split == "train" else 300)
        questions = args.questions or (default.questions_per_time if args.split == "train" else 1)
        items = dialogues(args.split, times, questions, seed=args.seed, region_swap_share=default.region_swap_share)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(corpus_text(items), encoding="utf-8")
        print(f"wrote {len(items)} dialogues to {args.out}")
        return 0
    if args.command == "train":
        from flight.assistant.model import save_weights

        config = QUICK_CONFIG if args.quick else FineTuneConfig()
        if args.steps is not None:
            config = FineTuneConfig(**{**asdict(config), "steps": args.steps})
        started = time.perf_counter()
        result = fine_tune(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
        meta = {"config": asdict(config), "curve": [list(p) for p in result.curve],
                "train_tokens": result.train_tokens, "answer_tokens": result.answer_tokens,
                "train_wall_s": result.train_wall_s, "tokens_per_s": result.tokens_per_s,
                "corpus_sha256": result.corpus_sha256, "corpus_examples": result.corpus_examples,
                "command": "python -m tools.dialogues train" + (" --quick" if args.quick else "")
                + (f" --steps {args.steps}" if args.steps is not None else ""),
                "total_wall_s": time.perf_counter() - started}
        digest = save_weights(args.out, result.state_dict, result.vocab, config_of(config), meta)
        size = os.path.getsize(args.out)
        print(f"wrote {args.out}: {size:,} bytes, sha256 {hashlib.sha256(args.out.read_bytes()).hexdigest()}, "
              f"weights sha256 {digest}; {result.tokens_per_s:,.0f} tokens/s, "
              f"{meta['total_wall_s']:.0f} s in all")
        return 0
    return _eval_report(args.weights, args.times)


def config_of(config: FineTuneConfig) -> dict[str, int]:
    """The GptConfig fields of a fine-tuning config."""
    return {"block_size": config.block_size, "n_layer": config.n_layer, "n_head": config.n_head,
            "n_embd": config.n_embd}


if __name__ == "__main__":
    sys.exit(main())
