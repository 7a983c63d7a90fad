"""The onboard training loop: one deterministic AdamW step at a time, resumable bit-exactly.

Bit-reproducibility needs four things (measured on the development host): a fixed
intra-op thread count, torch.use_deterministic_algorithms(True), seeded torch.Generator
objects for every random draw (never the global one), and those generators' states saved
with the weights and optimizer in the checkpoint. The scheduler calls `step()` only at
step boundaries, so a state_dict taken between steps is a complete description of the run.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import torch

from flight.training.corpus import CharTokenizer, load_default_corpus, train_val_split
from flight.training.gpt import GPT, GptConfig

if TYPE_CHECKING:
    from flight.training.dataset import PreparedDataset

STATE_FORMAT_VERSION = 1
VAL_FRACTION = 0.1


@dataclass(frozen=True)
class TrainerConfig:
    seed: int = 0
    batch_size: int = 16
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    learning_rate: float = 1e-3  # nanoGPT char-level value; 3e-3 learned slower here
    weight_decay: float = 0.1  # applied to matrices and embeddings only (nanoGPT's rule)
    grad_clip: float = 1.0  # max global L2 norm of the gradient; 0 disables clipping
    eval_batches: int = 4
    num_threads: int = 2  # part of the determinism contract: other counts give other bits

    def __post_init__(self) -> None:
        for name in ("batch_size", "block_size", "n_layer", "n_head", "n_embd",
                     "eval_batches", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainerConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("TrainerConfig.weight_decay and grad_clip must be >= 0")


def configure_determinism(num_threads: int) -> None:
    """Process-wide torch settings that make CPU training bit-reproducible.

    These are global to the process; every Trainer sets the same values, so two trainers
    with the same num_threads in one process do not disturb each other.
    """
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True)


def derive_seed(seed: int, stream: str) -> int:
    """An independent 63-bit seed per named random stream, from one user seed."""
    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def tensors_sha256(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over (name, tensor) pairs in name order: name, dtype, shape, then the raw bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        tensor = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def make_adamw(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with decay on matrices and embeddings, not biases or LayerNorm gains (nanoGPT's rule)."""
    params = [p for _, p in sorted(model.named_parameters())]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=learning_rate,
        betas=(0.9, 0.99),
        foreach=False,  # pin the implementation: a different kernel means other bits
    )


class Trainer:
    """Trains a character-level GPT on a text, one optimizer step per `step()` call.

    The data is either a text (default: the packaged corpus), tokenized in memory and split by
    VAL_FRACTION, or a prepared dataset (flight.training.dataset), whose memory-mapped token
    files and split are used as they are. Batches are drawn the same way from either, so a
    dataset prepared from a text with the same val_fraction trains bit-identically to the text.
    """

    def __init__(self, config: TrainerConfig, text: str | None = None,
                 dataset: PreparedDataset | None = None) -> None:
        configure_determinism(config.num_threads)
        self.config = config
        self._train_tokens: torch.Tensor | np.ndarray
        self._val_tokens: torch.Tensor | np.ndarray
        if dataset is not None:
            if text is not None:
                raise ValueError("give a text or a prepared dataset, not both")
            self.tokenizer = dataset.tokenizer
            self._train_tokens, self._val_tokens = dataset.train, dataset.val
        else:
            if text is None:
                text = load_default_corpus()
            self.tokenizer = CharTokenizer(text)
            tokens = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
            self._train_tokens, self._val_tokens = train_val_split(tokens, VAL_FRACTION)
        splits = {"training": self._train_tokens, "validation": self._val_tokens}
        for split, split_tokens in splits.items():
            if len(split_tokens) < config.block_size + 1:
                raise ValueError(
                    f"text too short: the {split} split has {len(split_tokens)} characters;"
                    f" block_size {config.block_size} needs at least {config.block_size + 1}"
                )

        # Separate streams so that, e.g., evaluating or changing the model never shifts
        # which batches training sees.
        init_generator = torch.Generator().manual_seed(derive_seed(config.seed, "model_init"))
        self._batch_generator = torch.Generator().manual_seed(derive_seed(config.seed, "batches"))

        self.model = GPT(
            GptConfig(
                vocab_size=self.tokenizer.vocab_size,
                block_size=config.block_size,
                n_layer=config.n_layer,
                n_head=config.n_head,
                n_embd=config.n_embd,
                dropout=0.0,  # nn.Dropout uses the global generator; see GptConfig
            ),
            generator=init_generator,
        )
        self.optimizer = self._make_optimizer()
        self._eval_starts = self._fixed_eval_starts()
        self.steps_done = 0

    def _make_optimizer(self) -> torch.optim.AdamW:
        return make_adamw(self.model, self.config.learning_rate, self.config.weight_decay)

    def _fixed_eval_starts(self) -> torch.Tensor:
        # Evenly spaced windows over the validation text: the same set on every call,
        # with no generator involved at all.
        count = self.config.eval_batches * self.config.batch_size
        last_start = len(self._val_tokens) - self.config.block_size - 1
        return torch.linspace(0, last_start, count).round().long()

    def _windows(
        self, data: torch.Tensor | np.ndarray, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = torch.arange(self.config.block_size + 1)
        index = starts.unsqueeze(1) + offsets
        if isinstance(data, np.ndarray):
            # A memory-mapped token file: gather only the windows, then widen to int64 ids.
            chunk = torch.from_numpy(data[index.numpy()].astype(np.int64))
        else:
            chunk = data[index]
        return chunk[:, :-1], chunk[:, 1:]  # inputs, next-character targets

    @property
    def parameter_count(self) -> int:
        return self.model.num_parameters()

    def step(self) -> float:
        """One AdamW step on the next training batch; returns that batch's loss."""
        high = len(self._train_tokens) - self.config.block_size  # exclusive
        starts = torch.randint(
            high, (self.config.batch_size,), generator=self._batch_generator
        )
        inputs, targets = self._windows(self._train_tokens, starts)
        self.model.train()
        _, loss = self.model(inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.grad_clip, foreach=False
            )
        self.optimizer.step()
        self.steps_done += 1
        return loss.item()

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean validation loss over the fixed evaluation batches."""
        self.model.eval()
        try:
            losses = []
            for starts in self._eval_starts.split(self.config.batch_size):
                inputs, targets = self._windows(self._val_tokens, starts)
                _, loss = self.model(inputs, targets)
                losses.append(loss.item())
        finally:
            self.model.train()
        return sum(losses) / len(losses)

    def weights_sha256(self) -> str:
        """SHA-256 over every parameter in name order: name, dtype, shape, raw bytes.

        Raw bytes are the host's (little-endian) float32 layout: the hash names a
        bit-exact state on hosts of the same byte order.
        """
        return tensors_sha256(self.model.named_parameters())

    def state_dict(self) -> dict[str, Any]:
        """Everything a new Trainer needs to continue exactly where this one is.

        A deep copy: training on afterwards does not change it. Contains only tensors
        and plain Python values, so torch.load(weights_only=True) accepts it.
        """
        return {
            "format_version": STATE_FORMAT_VERSION,
            "config": dataclasses.asdict(self.config),
            "vocab": self.tokenizer.vocab,
            "steps_done": self.steps_done,
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "generators": {"batches": self._batch_generator.get_state()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict; after this, training continues bit-identically."""
        version = state.get("format_version")
        if version != STATE_FORMAT_VERSION:
            raise ValueError(
                f"trainer state format_version {version!r} not supported"
                f" (this build reads {STATE_FORMAT_VERSION})"
            )
        mine = dataclasses.asdict(self.config)
        theirs = state["config"]
        differing = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        if differing:
            detail = ", ".join(f"{k}: {theirs.get(k)!r} != {mine.get(k)!r}" for k in differing)
            raise ValueError(f"trainer state has a different config ({detail})")
        if state["vocab"] != self.tokenizer.vocab:
            raise ValueError("trainer state was trained on a different vocabulary")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._batch_generator.set_state(state["generators"]["batches"])
        self.steps_done = int(state["steps_done"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], text: str | None = None,
                        dataset: PreparedDataset | None = None) -> Trainer:
        """A brand-new trainer built from a saved state's own config, then restored."""
        trainer = cls(TrainerConfig(**state["config"]), text, dataset)
        trainer.load_state_dict(state)
        return trainer
