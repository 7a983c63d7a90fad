"""The assistant's own language model: the onboard GPT fine-tuned on telemetry dialogues.

The weights ship with the flight software (``flight/assistant/data/assistant_gpt.pt``, built on the
ground by ``python -m tools.dialogues train``), so the assistant can speak from the first orbit,
before anything has been trained on board. The file is a plain ``torch.save`` dict that
``torch.load(weights_only=True)`` reads (tensors, strings, numbers only):

    format "sunlit-assistant-gpt", format_version 1, config (GptConfig fields), vocab (the
    character vocabulary, sorted), model (the state dict), weights_sha256 (over every tensor, in
    name order: name, dtype, shape, bytes), meta (how it was trained: config, loss curve, ...)

It is verified before use (format, version, vocabulary, hash); a missing or bad file makes
``load_assistant_generator()`` return None with the reason in ``last_load_error()``, and the
assistant answers from templates.

``AssistantGptGenerator`` is the backends' ``OnboardGptGenerator`` (greedy, returns only the
continuation) with two economies that do not change what it says: it stops after the end of line
(the assistant keeps only the first line), and it keeps each layer's keys and values between
tokens instead of recomputing the whole window per token, while the text fits the block.
"""

from __future__ import annotations

import math
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch.nn import functional as F

from flight.assistant.backends import OnboardGptGenerator
from flight.atomic_file import write_atomic
from flight.checkpoint import CheckpointInfo, CheckpointStore
from flight.training.corpus import CharTokenizer
from flight.training.finetune import TASK as FINETUNE_TASK
from flight.training.finetune import assistant_model_from_state
from flight.training.gpt import GPT, GptConfig
from flight.training.trainer import tensors_sha256

FORMAT = "sunlit-assistant-gpt"
FORMAT_VERSION = 1
WEIGHTS_FILE = "assistant_gpt.pt"
STOP = "\n"


class AssistantModelError(ValueError):
    """The assistant's weights file is missing or wrong; the message names the file and the fault."""


def default_weights_path() -> Path:
    return Path(str(resources.files("flight.assistant").joinpath("data", WEIGHTS_FILE)))


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Over every tensor of the state dict (the tied embedding and head both), in name order."""
    return tensors_sha256(state_dict.items())


def save_weights(path: str | os.PathLike[str], state_dict: Mapping[str, torch.Tensor], vocab: str,
                 config: Mapping[str, int], meta: Mapping[str, Any] | None = None) -> str:
    """Write the weights file atomically (temporary name, fsync, rename); returns weights_sha256."""
    path = Path(path)
    state = {name: tensor.detach().clone().contiguous() for name, tensor in state_dict.items()}
    digest = weights_sha256(state)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dict(config), "vocab": vocab,
               "model": state, "weights_sha256": digest, "meta": dict(meta or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda handle: torch.save(payload, handle))
    return digest


def load_weights(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The verified contents of a weights file."""
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise AssistantModelError(f"{path}: no such weights file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same fault to the caller
        raise AssistantModelError(f"{path}: not a readable torch file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AssistantModelError(f"{path}: not an assistant weights file (format {FORMAT!r} expected)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise AssistantModelError(f"{path}: format_version {payload.get('format_version')!r} not supported "
                                  f"(this build reads {FORMAT_VERSION})")
    for key in ("config", "vocab", "model", "weights_sha256"):
        if key not in payload:
            raise AssistantModelError(f"{path}: missing {key!r}")
    if weights_sha256(payload["model"]) != payload["weights_sha256"]:
        raise AssistantModelError(f"{path}: weights do not match their SHA-256 (corrupt file)")
    return payload


def build_model(payload: Mapping[str, Any]) -> tuple[GPT, CharTokenizer]:
    try:
        tokenizer = CharTokenizer.from_vocab(payload["vocab"])
        config = GptConfig(vocab_size=tokenizer.vocab_size, **payload["config"])
        model = GPT(config)
        model.load_state_dict(payload["model"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise AssistantModelError(f"weights do not fit the onboard GPT: {exc}") from exc
    model.eval()
    return model, tokenizer


class AssistantGptGenerator(OnboardGptGenerator):
    """Greedy text from the onboard GPT, up to and including the first end of line."""

    def __init__(self, model: GPT, tokenizer: CharTokenizer, *, meta: Mapping[str, Any] | None = None,
                 stop: str = STOP) -> None:
        super().__init__(model, tokenizer)
        self.meta = dict(meta or {})
        self._stop_id = tokenizer.encode(stop)[0]

    def generate_ids(self, prompt: str, max_new_tokens: int) -> list[int]:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        ids = self.encode_prompt(prompt)
        block = self.block_size
        new: list[int] = []
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None = []
        with torch.no_grad():
            logits = self._forward_cached(ids, 0, cache)
            while True:
                next_id = int(logits.argmax())
                new.append(next_id)
                ids.append(next_id)
                if next_id == self._stop_id or len(new) >= max_new_tokens:
                    return new
                if len(ids) <= block and cache is not None:
                    logits = self._forward_cached([next_id], len(ids) - 1, cache)
                else:
                    # Past the block the window slides and positions shift: recompute it whole,
                    # exactly as the plain generator does.
                    cache = None
                    window = torch.tensor([ids[-block:]], dtype=torch.long)
                    logits = self.model(window)[0][0, -1]

    def _forward_cached(self, ids: list[int], start: int, cache: list[tuple[torch.Tensor, torch.Tensor]]
                        ) -> torch.Tensor:
        """Logits after ``ids`` placed at positions start.., given the keys and values of 0..start-1
        in ``cache`` (extended in place). The same operations as GPT.forward, row by row."""
        model = self.model
        t = model.transformer
        idx = torch.tensor([ids], dtype=torch.long)
        positions = torch.arange(start, start + len(ids))
        x = t.wte(idx) + t.wpe(positions)
        seq = len(ids)
        for layer, block in enumerate(t.h):
            attn = block.attn
            channels = x.shape[-1]
            head_dim = channels // attn.n_head
            q, k, v = attn.c_attn(block.ln_1(x)).split(channels, dim=2)
            q, k, v = (z.view(1, seq, attn.n_head, head_dim).transpose(1, 2) for z in (q, k, v))
            if layer < len(cache):
                k = torch.cat((cache[layer][0], k), dim=2)
                v = torch.cat((cache[layer][1], v), dim=2)
                cache[layer] = (k, v)
            else:
                cache.append((k, v))
            scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(head_dim))
            if seq > 1:
                future = torch.ones(seq, start + seq, dtype=torch.bool).triu(diagonal=start + 1)
                scores = scores.masked_fill(future, float("-inf"))
            y = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).contiguous().view(1, seq, channels)
            x = x + attn.c_proj(y)
            x = x + block.mlp(block.ln_2(x))
        return model.lm_head(t.ln_f(x[:, -1]))[0]


def load_generator(path: str | os.PathLike[str] | None = None) -> AssistantGptGenerator:
    """A generator from a weights file (default: the shipped one); raises AssistantModelError."""
    payload = load_weights(path)
    model, tokenizer = build_model(payload)
    return AssistantGptGenerator(model, tokenizer, meta=payload.get("meta"))


_lock = threading.Lock()
_cached: dict[str, AssistantGptGenerator | None] = {}
_errors: dict[str, str] = {}


def load_assistant_generator(path: str | os.PathLike[str] | None = None) -> AssistantGptGenerator | None:
    """The shipped (or given) model as a TextGenerator, loaded once per path; None when it cannot be
    used (the reason: ``last_load_error()``)."""
    key = str(Path(path) if path is not None else default_weights_path())
    with _lock:
        if key not in _cached:
            try:
                _cached[key] = load_generator(key)
            except AssistantModelError as exc:
                _cached[key] = None
                _errors[key] = str(exc)
        return _cached[key]


def last_load_error(path: str | os.PathLike[str] | None = None) -> str | None:
    key = str(Path(path) if path is not None else default_weights_path())
    return _errors.get(key)


class CheckpointAssistantModel:
    """The assistant's generator factory when the model is fine-tuned on board: the newest verified
    checkpoint of the training job's "assistant" task, else ``fallback()`` (the shipped weights).

    Called at each question. It looks at the store's newest file name (a directory listing) and
    loads only when that changes: ``load_latest`` verifies each checkpoint's hash and falls back
    past a corrupt newest one to the previous verified one. Checkpoints of the text task are not
    the assistant's and are ignored. Each generator is named by its step, so the assistant reports
    every change of model as an event.
    """

    def __init__(self, store: CheckpointStore, fallback: Callable[[], Any] | None = None) -> None:
        self.store = store
        self.fallback = fallback
        self.generator: AssistantGptGenerator | None = None
        self.checkpoint: CheckpointInfo | None = None
        self._newest_seen: str | None = None

    def __call__(self) -> Any:
        newest = self.store.list_checkpoints()
        if newest and newest[-1].name != self._newest_seen:
            self._newest_seen = newest[-1].name
            self._load()
        if self.generator is not None:
            return self.generator
        return self.fallback() if self.fallback is not None else None

    def _load(self) -> None:
        loaded = self.store.load_latest()
        if loaded is None or loaded[0].get("task") != FINETUNE_TASK:
            return
        state, info = loaded
        if self.checkpoint is not None and info.path == self.checkpoint.path:
            return
        model, tokenizer = assistant_model_from_state(state)
        generator = AssistantGptGenerator(model, tokenizer, meta={"checkpoint": info.path.name, "step": info.step})
        generator.name = f"assistant-gpt fine-tuned on board, step {info.step}"
        generator.checkpoint = info
        self.generator, self.checkpoint = generator, info
