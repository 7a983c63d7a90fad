"""Language-model backends the assistant talks through: one small interface, two implementations.

``TextGenerator.generate(prompt, max_new_tokens)`` decodes greedily (the same prompt always gives
the same text) and returns only the continuation, never the prompt. Both backends also say what an
answer costs the GPU (``modelled_work_ref_s(prompt, max_new_tokens)``, reference seconds), which
the assistant asks the power manager for before the model may answer.

- ``OnboardGptGenerator``: the character-level GPT trained on board (flight/training), loaded
  from the newest verified checkpoint.
- ``HuggingFaceGenerator``: a Hugging Face causal language model (Gemma, as on Starcloud-1, or any
  ``AutoModelForCausalLM``) read from a local directory. ``transformers`` is an optional extra
  (``pip install 'sunlit[hf]'``) imported only when this backend is built. Nothing is ever fetched:
  files are read with ``local_files_only=True`` under ``HF_HUB_OFFLINE=1``/``TRANSFORMERS_OFFLINE=1``,
  and a model directory's own Python code is never run (``trust_remote_code=False``).

Every way a backend can be unavailable (no directory, no config.json, transformers missing, files
that do not load) is a ``BackendUnavailable`` naming the cause, so the wiring can fall back to the
onboard model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from flight.checkpoint import CheckpointInfo, CheckpointStore
    from flight.training.corpus import CharTokenizer
    from flight.training.gpt import GPT

HF_INSTALL_HINT = "pip install 'sunlit[hf]'"
# Modelled GPU cost of one token, in reference seconds (seconds at full-TDP throughput), used by the
# assistant to ask the power manager for GPU time before it lets a model answer.
# The onboard character GPT (4 layers, 128 wide, ~0.8 M parameters) needs ~1.6 MFLOP per token:
# nothing for an H100. Eager decoding is bound by kernel launches instead: ~60 kernels per token
# (~14 per layer, plus embeddings, final norm and head) at ~10 us each is ~0.6 ms, rounded up to 1 ms.
ONBOARD_REF_S_PER_TOKEN = 1e-3
# A Hugging Face model decodes memory-bound: every new token reads every weight once from HBM
# (H100 SXM: 3.35 TB/s); never less than the launch-bound floor above.
H100_HBM_BYTES_PER_S = 3.35e12
HF_MODEL_ENV = "SUNLIT_HF_MODEL"  # a directory holding a Hugging Face model, set by the operator
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class BackendUnavailable(RuntimeError):
    """A backend cannot be used here; the message says why and, where it helps, what to install."""


@runtime_checkable
class TextGenerator(Protocol):
    name: str  # e.g. "onboard-gpt" or "hf:<dir name>"

    def generate(self, prompt: str, max_new_tokens: int) -> str:
        """Greedy (deterministic) continuation of `prompt`, at most `max_new_tokens` tokens."""
        ...


def _check_max_new_tokens(max_new_tokens: int) -> int:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    return max_new_tokens


# -- the onboard character-level GPT ---------------------------------------------------------------


class OnboardGptGenerator:
    """The GPT trained on board, one token per character.

    Takes a Trainer (its model and tokenizer are used) or a bare GPT with its CharTokenizer.
    """

    name = "onboard-gpt"

    def __init__(self, trainer_or_model: Any, tokenizer: CharTokenizer | None = None,
                 checkpoint: CheckpointInfo | None = None) -> None:
        model = getattr(trainer_or_model, "model", trainer_or_model)
        tokenizer = tokenizer if tokenizer is not None else getattr(trainer_or_model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("OnboardGptGenerator needs a tokenizer with a bare model (a Trainer carries its own)")
        self.model: GPT = model
        self.tokenizer = tokenizer
        self.checkpoint = checkpoint  # where the weights came from, when loaded from a store

    @classmethod
    def from_checkpoint_store(cls, store: CheckpointStore, text: str | None = None) -> OnboardGptGenerator | None:
        """The newest verified checkpoint as a generator, or None when nothing has been trained yet.

        Either training task's checkpoint: a text-task one needs its training text (`text`, default:
        the packaged corpus) for the vocabulary; an assistant-task one carries its own.
        """
        from flight.training.finetune import model_from_checkpoint_state  # builds models: only needed here

        loaded = store.load_latest()
        if loaded is None:
            return None
        state, info = loaded
        model, tokenizer = model_from_checkpoint_state(state, text)
        return cls(model, tokenizer, checkpoint=info)

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    ref_s_per_token = ONBOARD_REF_S_PER_TOKEN

    def modelled_work_ref_s(self, prompt: str, max_new_tokens: int) -> float:
        """GPU work an answer may take, in reference seconds: every prompt character the model
        sees and the whole answer budget, each at the decode rate (prefill really is one parallel
        pass, so this is an upper bound; the power manager is asked for no less)."""
        return (min(len(prompt), self.block_size) + max_new_tokens) * self.ref_s_per_token

    def encode_prompt(self, prompt: str) -> list[int]:
        """The ids the model sees: every character known, cropped to the block size from the left
        (the most recent characters matter most for what comes next)."""
        unknown = sorted(set(prompt) - set(self.tokenizer.vocab))
        if unknown:
            raise ValueError(f"prompt has characters the onboard model does not know: {''.join(unknown)!r}")
        if not prompt:
            raise ValueError("prompt must not be empty: the onboard model needs at least one character")
        return self.tokenizer.encode(prompt)[-self.block_size:]

    def generate_ids(self, prompt: str, max_new_tokens: int) -> list[int]:
        _check_max_new_tokens(max_new_tokens)
        idx = torch.tensor([self.encode_prompt(prompt)], dtype=torch.long)
        with torch.no_grad():
            out = self.model.generate(idx, max_new_tokens, temperature=0.0)  # greedy: no randomness
        return out[0, idx.shape[1]:].tolist()

    def generate(self, prompt: str, max_new_tokens: int) -> str:
        return self.tokenizer.decode(self.generate_ids(prompt, max_new_tokens))


# -- a Hugging Face model from a local directory --------------------------------------------------


def looks_like_hf_model(path: str | os.PathLike[str]) -> bool:
    """A directory with a config.json: what from_pretrained needs to find the model's class."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def find_local_model(candidates: Iterable[str | os.PathLike[str] | None] = (), *,
                     environ: Mapping[str, str] | None = None) -> Path | None:
    """The first local Hugging Face model directory: $SUNLIT_HF_MODEL first, then `candidates` in order.

    Candidates are places a model may be (missing ones are skipped); a SUNLIT_HF_MODEL that is set
    but names no model directory is a configuration error and raises BackendUnavailable.
    """
    environ = os.environ if environ is None else environ
    chosen = environ.get(HF_MODEL_ENV)
    if chosen:
        if not looks_like_hf_model(chosen):
            raise BackendUnavailable(f"{HF_MODEL_ENV}={chosen!r} is not a model directory (no config.json there)")
        return Path(chosen)
    for candidate in candidates:
        if candidate is not None and looks_like_hf_model(candidate):
            return Path(candidate)
    return None


def resolve_device(device: str) -> str:
    """"auto" picks the GPU when torch sees one, else the CPU; anything else is passed to torch."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def resolve_dtype(dtype: torch.dtype | str | None, device: str) -> torch.dtype:
    """None: bfloat16 on a GPU (what Gemma's weights are), float32 on a CPU (bf16 matmuls are slow there)."""
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype {dtype!r} is not a torch dtype (e.g. 'float32', 'bfloat16', 'float16')")
    return resolved


@contextmanager
def _offline() -> Iterator[None]:
    """Offline mode for the load. huggingface_hub reads these once, at its first import (which
    happens in here), so a process that loads a model this way stays offline afterwards."""
    saved = {key: os.environ.get(key) for key in _OFFLINE_ENV}
    os.environ.update(_OFFLINE_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise BackendUnavailable(f"the Hugging Face backend needs transformers, which is not installed "
                                 f"({err}); install it with: {HF_INSTALL_HINT}") from err
    return transformers


class HuggingFaceGenerator:
    """A causal language model read from `model_dir` (config.json, weights, tokenizer files).

    use_chat_template: "auto" wraps the prompt as one user turn when the tokenizer has a chat
    template (instruction-tuned models such as Gemma-it), True requires one, False never uses it.
    max_input_tokens: prompts longer than this (default: the model's context less max_new_tokens)
    lose their oldest tokens.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, device: str = "auto",
                 dtype: torch.dtype | str | None = None, max_input_tokens: int | None = None,
                 use_chat_template: bool | Literal["auto"] = "auto") -> None:
        path = Path(model_dir)
        if not path.is_dir():
            raise BackendUnavailable(f"no model directory at {path}")
        if not (path / "config.json").is_file():
            raise BackendUnavailable(f"{path} has no config.json: not a Hugging Face model directory")
        if use_chat_template not in ("auto", True, False):
            raise ValueError(f"use_chat_template must be 'auto', True or False, got {use_chat_template!r}")
        if max_input_tokens is not None and max_input_tokens < 1:
            raise ValueError(f"max_input_tokens must be >= 1, got {max_input_tokens}")
        self.model_dir = path
        self.name = f"hf:{path.name}"
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        with _offline():
            transformers = _import_transformers()
            try:
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                    path, local_files_only=True, trust_remote_code=False)
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    path, local_files_only=True, trust_remote_code=False, dtype=self.dtype)
            except Exception as err:  # noqa: BLE001 - whatever the files do wrong, the backend is unavailable
                raise BackendUnavailable(f"cannot load a causal language model from {path}: "
                                         f"{type(err).__name__}: {err}") from err
        self.model = model.to(self.device).eval()  # eval: no dropout, same text every time
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        if use_chat_template is True and not has_template:
            raise ValueError(f"use_chat_template=True but the tokenizer in {path} has no chat template")
        self.uses_chat_template = has_template if use_chat_template == "auto" else use_chat_template
        self.max_input_tokens = max_input_tokens
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self._eos_ids = eos  # the model's own list where it has one (Gemma-it also stops at <end_of_turn>)
        pad = self.tokenizer.pad_token_id
        if pad is None:  # many causal LMs have no pad token; eos is the usual stand-in
            pad = eos[0] if isinstance(eos, list) else eos
        self._pad_id = pad
        weight_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.ref_s_per_token = max(ONBOARD_REF_S_PER_TOKEN, weight_bytes / H100_HBM_BYTES_PER_S)

    def modelled_work_ref_s(self, prompt: str, max_new_tokens: int) -> float:
        """GPU work an answer may take, in reference seconds: the prompt's tokens and the answer
        budget, each at the memory-bound decode rate (an upper bound, as for the onboard model)."""
        return (len(self.encode_prompt(prompt, max_new_tokens)) + max_new_tokens) * self.ref_s_per_token

    def _context_tokens(self) -> int | None:
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _input_limit(self, max_new_tokens: int) -> int | None:
        if self.max_input_tokens is not None:
            return self.max_input_tokens
        context = self._context_tokens()
        return None if context is None else max(1, context - max_new_tokens)

    def _encode_text(self, prompt: str) -> list[int]:
        if self.uses_chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                      tokenize=False, add_generation_prompt=True)
            # The template writes its own special tokens (Gemma's starts with <bos>): add none twice.
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(prompt)["input_ids"])

    def encode_prompt(self, prompt: str, max_new_tokens: int = 1) -> list[int]:
        """The ids the model sees, cropped to fit the context. With a chat template the prompt's own
        oldest tokens go first, so the turn markers stay; the final crop is a safety net."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a str, got {type(prompt).__name__}")
        ids = self._encode_text(prompt)
        limit = self._input_limit(max_new_tokens)
        if limit is None or len(ids) <= limit:
            return ids
        if self.uses_chat_template:
            own = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            keep = limit - (len(ids) - len(own))
            if keep >= 1:
                ids = self._encode_text(self.tokenizer.decode(own[-keep:]))
        return ids[-limit:]

    def generate_ids(self, prompt: str, max_new_tokens: int) -> list[int]:
        """The new token ids only (at most max_new_tokens: fewer when the model ends its answer)."""
        _check_max_new_tokens(max_new_tokens)
        ids = self.encode_prompt(prompt, max_new_tokens)
        if not ids:
            raise ValueError("prompt encodes to no tokens: give the model something to continue")
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                      eos_token_id=self._eos_ids, pad_token_id=self._pad_id)
        return out[0, input_ids.shape[1]:].tolist()

    def generate(self, prompt: str, max_new_tokens: int) -> str:
        return self.tokenizer.decode(self.generate_ids(prompt, max_new_tokens), skip_special_tokens=True)
