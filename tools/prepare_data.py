"""`sunlit prepare TEXT_FILE --out DIR [--val-fraction F]`: turn a text file into training token files.

Writes train.bin, val.bin and meta.json (see flight/training/dataset.py). A scenario trains on
the result with ``[training] dataset = "DIR"`` (relative to the scenario file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flight.training.dataset import DatasetError, prepare


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``prepare TEXT_FILE --out DIR [--val-fraction F]`` to a ``sunlit`` subparser set."""
    parser = subparsers.add_parser(
        "prepare", help="tokenize a text file into train/validation token files for training",
        description="Character-level tokenization of a UTF-8 text file into DIR/train.bin and DIR/val.bin "
                    "(uint8 ids when the vocabulary has at most 256 characters, else uint16) and DIR/meta.json "
                    "(vocabulary, sizes, SHA-256 of the source and of each file, split rule). The last "
                    "VAL_FRACTION of the text is the validation split.")
    parser.add_argument("text_file", type=Path, metavar="TEXT_FILE", help="UTF-8 text to train on")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                        help="share of the text, from its end, kept for validation (default 0.1)")
    parser.set_defaults(func=cmd_prepare)
    return parser


def cmd_prepare(args: argparse.Namespace) -> int:
    try:
        dataset = prepare(args.text_file, args.out, val_fraction=args.val_fraction)
    except (DatasetError, ValueError, OSError) as exc:
        print(f"sunlit prepare: {exc}", file=sys.stderr)
        return 2
    meta = dataset.meta
    split = meta["split"]
    print(f"prepared {args.text_file} -> {args.out}")
    print(f"  vocabulary {meta['vocab_size']} characters, token ids {meta['dtype']}")
    print(f"  train {split['train_tokens']} tokens, validation {split['val_tokens']} tokens "
          f"(last {split['val_fraction']:g} of the text)")
    print(f"  source sha256 {meta['source']['sha256']}")
    return 0
