"""Prepared training data: a text file turned into token files once, on the ground or on board.

``prepare(text_path, out_dir)`` writes three files (after nanoGPT's ``shakespeare_char/prepare.py``):

    train.bin   the training tokens, raw little-endian unsigned integers (numpy ``tofile``)
    val.bin     the validation tokens, same encoding
    meta.json   format version, tokenizer and vocabulary, token dtype, token counts and the
                SHA-256 of each bin, the source file's name, size and SHA-256, and the split rule

Token dtype: ``uint8`` when the vocabulary has at most 256 entries (any ASCII text), otherwise
``uint16`` (up to 65,536 distinct characters); meta.json says which.

Split rule ("tail"): the first ``int(n * (1 - val_fraction))`` tokens train, the rest validate,
as in nanoGPT's shakespeare_char. It is the rule ``corpus.train_val_split`` applies, so a
prepared copy of a text trains bit-identically to the text itself (same val_fraction).

The text is read as bytes and decoded as strict UTF-8 with no newline translation, so the
tokens (and the SHA-256) describe exactly the file's content. Each file is written to a
temporary name, fsynced and renamed, meta.json last: an interrupted ``prepare`` leaves no
meta.json, which ``load_prepared`` reports, never a half-written dataset that looks whole.

``load_prepared(dir)`` checks everything before training sees a token (every file present,
meta.json well-formed, sizes match the counts, vocabulary consistent, hashes match, every id
inside the vocabulary) and memory-maps the bins, so a large corpus is never read into memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flight.atomic_file import fsync_directory, write_atomic
from flight.training.corpus import CharTokenizer, train_val_split

FORMAT = "sunlit-prepared-text"
FORMAT_VERSION = 1
TOKENIZERS = ("char",)
META_FILE = "meta.json"
TRAIN_FILE = "train.bin"
VAL_FILE = "val.bin"
SPLIT_RULE = "tail"
# Explicit little-endian types: the files mean the same on any host.
_DTYPES = {"uint8": np.dtype("u1"), "uint16": np.dtype("<u2")}


class DatasetError(ValueError):
    """A prepared dataset (or its source text) is missing or wrong; the message names the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class PreparedDataset:
    """A validated prepared dataset: the tokenizer and the memory-mapped token arrays."""

    directory: Path
    meta: dict[str, Any]
    tokenizer: CharTokenizer
    train: np.ndarray  # read-only memory maps
    val: np.ndarray

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def source_sha256(self) -> str:
        return self.meta["source"]["sha256"]

    def text(self) -> str:
        """The whole source text again (training then validation), for text-only consumers."""
        return self.tokenizer.decode(np.concatenate([self.train, self.val]).tolist())


def token_dtype_name(vocab_size: int) -> str:
    if vocab_size <= 256:
        return "uint8"
    if vocab_size <= 65536:
        return "uint16"
    raise ValueError(f"a vocabulary of {vocab_size} does not fit uint16 token ids (at most 65536)")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes | np.ndarray) -> None:
    write_atomic(path, data.tofile if isinstance(data, np.ndarray) else (lambda handle: handle.write(data)))


def read_text_file(text_path: str | Path) -> tuple[str, bytes]:
    """The file's text (strict UTF-8, newlines untouched) and its raw bytes."""
    path = Path(text_path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatasetError(path, f"cannot read the text file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(path, f"not UTF-8 text: {err.reason} at byte {err.start}") from None
    if not text:
        raise DatasetError(path, "the text file is empty")
    return text, raw


def prepare(text_path: str | Path, out_dir: str | Path, *, val_fraction: float = 0.1,
            tokenizer: str = "char") -> PreparedDataset:
    """Tokenize a text file into train.bin / val.bin / meta.json in out_dir; return it loaded."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    if not (isinstance(val_fraction, (int, float)) and 0.0 < val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    source = Path(text_path)
    text, raw = read_text_file(source)
    char_tokenizer = CharTokenizer(text)
    dtype_name = token_dtype_name(char_tokenizer.vocab_size)
    ids = np.array(char_tokenizer.encode(text), dtype=_DTYPES[dtype_name])
    train, val = train_val_split(ids, val_fraction)
    if len(train) == 0 or len(val) == 0:
        raise DatasetError(source, f"{len(ids)} characters are too few to split with val_fraction "
                                   f"{val_fraction:g}: both splits need at least one token")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    for name, tokens in ((TRAIN_FILE, train), (VAL_FILE, val)):
        _write_atomic(out / name, tokens)
        files[name] = {"tokens": int(len(tokens)), "bytes": int(tokens.nbytes),
                       "sha256": hashlib.sha256(tokens.tobytes()).hexdigest()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tokenizer": tokenizer,
        "vocab": char_tokenizer.vocab,
        "vocab_size": char_tokenizer.vocab_size,
        "dtype": dtype_name,
        "byte_order": "little",
        "source": {"file": source.name, "bytes": len(raw), "characters": len(text),
                   "sha256": hashlib.sha256(raw).hexdigest()},
        "split": {"rule": SPLIT_RULE, "val_fraction": float(val_fraction),
                  "train_tokens": int(len(train)), "val_tokens": int(len(val))},
        "files": files,
    }
    _write_atomic(out / META_FILE, (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    fsync_directory(out)
    return load_prepared(out)


# --- loading and validation --------------------------------------------------------------------

def _field(meta: dict[str, Any], path: Path, keys: str | tuple[str, ...], kind: type | tuple[type, ...]) -> Any:
    """meta[k1][k2]... checked for presence and type; keys is a dotted string or a tuple."""
    parts = tuple(keys.split(".")) if isinstance(keys, str) else keys
    dotted = ".".join(parts)
    value: Any = meta
    for part in parts:
        if not isinstance(value, dict) or part not in value:
            raise DatasetError(path, f"missing key {dotted!r}")
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DatasetError(path, f"key {dotted!r} must be a {names}, got {value!r}")
    return value


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / META_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(path, "missing: not a prepared dataset (run 'sunlit prepare TEXT --out DIR')") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"unreadable: {err}") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatasetError(path, f"corrupt: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(meta, dict):
        raise DatasetError(path, f"corrupt: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise DatasetError(path, f"format is {meta.get('format')!r}, expected {FORMAT!r}")
    version = _field(meta, path, "format_version", int)
    if version != FORMAT_VERSION:
        raise DatasetError(path, f"unsupported format_version {version} (this build reads {FORMAT_VERSION})")
    return meta


def _check_meta(meta: dict[str, Any], path: Path) -> tuple[CharTokenizer, np.dtype]:
    tokenizer_name = _field(meta, path, "tokenizer", str)
    if tokenizer_name not in TOKENIZERS:
        raise DatasetError(path, f"tokenizer {tokenizer_name!r} not supported (this build: {', '.join(TOKENIZERS)})")
    vocab = _field(meta, path, "vocab", str)
    vocab_size = _field(meta, path, "vocab_size", int)
    if not vocab or vocab != "".join(sorted(set(vocab))):
        raise DatasetError(path, "vocab mismatch: 'vocab' must be the sorted, duplicate-free set of characters")
    if vocab_size != len(vocab):
        raise DatasetError(path, f"vocab mismatch: vocab_size is {vocab_size} but vocab has {len(vocab)} characters")
    dtype_name = _field(meta, path, "dtype", str)
    if dtype_name not in _DTYPES:
        raise DatasetError(path, f"dtype {dtype_name!r} not supported (one of {', '.join(_DTYPES)})")
    if dtype_name == "uint8" and vocab_size > 256:
        raise DatasetError(path, f"vocab mismatch: {vocab_size} token ids do not fit dtype uint8")
    if _field(meta, path, "byte_order", str) != "little":
        raise DatasetError(path, "byte_order must be 'little'")
    rule = _field(meta, path, "split.rule", str)
    if rule != SPLIT_RULE:
        raise DatasetError(path, f"split rule {rule!r} not supported (this build: {SPLIT_RULE!r})")
    _field(meta, path, "source.sha256", str)
    return CharTokenizer.from_vocab(vocab), _DTYPES[dtype_name]


def _load_bin(directory: Path, name: str, meta: dict[str, Any], meta_path: Path, split_key: str,
              dtype: np.dtype, vocab_size: int, verify_hashes: bool) -> np.ndarray:
    tokens = _field(meta, meta_path, ("files", name, "tokens"), int)
    expected_sha = _field(meta, meta_path, ("files", name, "sha256"), str)
    if tokens != _field(meta, meta_path, f"split.{split_key}", int):
        raise DatasetError(meta_path, f"files.{name}.tokens ({tokens}) differs from split.{split_key}")
    if tokens < 1:
        raise DatasetError(meta_path, f"{name} must hold at least one token, meta.json says {tokens}")
    path = directory / name
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetError(path, "missing (meta.json lists it)") from None
    expected_bytes = tokens * dtype.itemsize
    if size != expected_bytes:
        raise DatasetError(path, f"wrong size: {size} bytes, expected {expected_bytes} "
                                 f"({tokens} tokens of {dtype.name})")
    data = np.memmap(path, dtype=dtype, mode="r")
    if verify_hashes:
        found = hashlib.sha256(memoryview(data)).hexdigest()
        if found != expected_sha:
            raise DatasetError(path, f"SHA-256 mismatch: meta.json says {expected_sha[:16]}..., "
                                     f"file is {found[:16]}...")
        largest = int(data.max())
        if largest >= vocab_size:
            raise DatasetError(path, f"vocab mismatch: token id {largest} outside the vocabulary of {vocab_size}")
    return data


def load_prepared(directory: str | Path, *, verify_hashes: bool = True) -> PreparedDataset:
    """Validate a prepared dataset and memory-map its bins; DatasetError names what is wrong.

    verify_hashes=False skips reading every token (SHA-256 and id range); sizes are still checked.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise DatasetError(folder, "not a directory (expected a prepared dataset: meta.json, train.bin, val.bin)")
    meta = _read_meta(folder)
    meta_path = folder / META_FILE
    tokenizer, dtype = _check_meta(meta, meta_path)
    train = _load_bin(folder, TRAIN_FILE, meta, meta_path, "train_tokens", dtype, tokenizer.vocab_size,
                      verify_hashes)
    val = _load_bin(folder, VAL_FILE, meta, meta_path, "val_tokens", dtype, tokenizer.vocab_size, verify_hashes)
    return PreparedDataset(directory=folder, meta=meta, tokenizer=tokenizer, train=train, val=val)
