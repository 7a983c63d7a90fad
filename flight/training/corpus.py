"""The training text and its character-level tokenizer.

The corpus ships inside the package (nothing is downloaded in orbit): a selection of
Shakespeare's sonnets, after Starcloud-1, which trained nanoGPT on Shakespeare.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from typing import TypeVar

DEFAULT_CORPUS_FILE = "sonnets.txt"

_T = TypeVar("_T", bound=Sequence)


def load_default_corpus() -> str:
    """The packaged sonnets, read through importlib.resources (works from a wheel too)."""
    data_dir = resources.files("flight.training").joinpath("data")
    return data_dir.joinpath(DEFAULT_CORPUS_FILE).read_text(encoding="utf-8")


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters.

    Sorting makes the mapping a pure function of the text's character set, so the same
    text always gives the same ids. The vocabulary string is stored in checkpoints and
    `from_vocab` rebuilds an identical tokenizer from it.
    """

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("cannot build a tokenizer from empty text")
        self._vocab = "".join(sorted(set(text)))
        self._id_of = {ch: i for i, ch in enumerate(self._vocab)}

    @classmethod
    def from_vocab(cls, vocab: str) -> CharTokenizer:
        """Rebuild from a stored vocabulary; it must be sorted and without duplicates."""
        if vocab != "".join(sorted(set(vocab))):
            raise ValueError("vocab must be the sorted, duplicate-free set of characters")
        return cls(vocab)

    @property
    def vocab(self) -> str:
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._id_of[ch] for ch in text]
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._vocab):
                raise ValueError(f"token id {i} outside vocabulary of size {len(self._vocab)}")
            out.append(self._vocab[i])
        return "".join(out)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other._vocab == self._vocab

    def __hash__(self) -> int:
        return hash(self._vocab)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def train_val_split(tokens: _T, val_fraction: float = 0.1) -> tuple[_T, _T]:
    """Head for training, tail for validation (contiguous, so no window straddles both)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_train = int(len(tokens) * (1.0 - val_fraction))
    return tokens[:n_train], tokens[n_train:]
