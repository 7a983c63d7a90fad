"""Dialogue examples for the assistant's model: the corpus format, training rows with answer masks,
and batches. Shared by the ground tooling that builds the shipped weights (tools/dialogues.py) and
the onboard fine-tuning task (flight/training/finetune.py), so both train on exactly the same rows.

A corpus is plain text, one example after another, each ending in EXAMPLE_END:

    <context lines>\\nQ: <question>\\nA: <answer>\\n\\n

The prompt is everything up to and including "\\nA: "; the answer is the rest of the line. Only
the answer and its end of line carry loss (the model is never taught to write telemetry).
"""

from __future__ import annotations

import types
from typing import Any, Iterable, NamedTuple, Sequence

import torch
from torch.nn import functional as F

EXAMPLE_END = "\n\n"
ANSWER_MARK = "\nA: "

Row = tuple[list[int], list[tuple[int, int]]]  # token ids, [start, end) spans that carry loss


class DialogueCorpusError(ValueError):
    """A dialogue corpus that cannot be trained on; the message names the example and the fault."""


class Example(NamedTuple):
    """One dialogue as encode_rows needs it (tools/dialogues.Dialogue has the same fields)."""

    prompt: str
    question: str
    answer: str
    preset: str = ""
    t_s: int = 0


def vocabulary() -> str:
    """Every printable ASCII character, the end of line and the degree sign: all a context line,
    an answer or a typed question normally holds, independent of which corpus was drawn."""
    return "".join(sorted(set("\n°" + "".join(chr(c) for c in range(32, 127)))))


def split_example(example: str) -> tuple[str, str]:
    """(prompt, answer) of one example of a corpus (without its EXAMPLE_END)."""
    head, sep, answer = example.rpartition(ANSWER_MARK)
    if not sep:
        raise ValueError(f"not a dialogue example (no '\\nA: '): {example[:60]!r}")
    return head + sep, answer


def parse_corpus(text: str, vocab: str | None = None, source: str = "corpus") -> list[Example]:
    """Every example of a corpus text, checked: each has a question and a one-line, non-empty
    answer, and (with ``vocab``) only characters the model knows. Raises DialogueCorpusError."""
    known = set(vocab) if vocab is not None else None
    examples: list[Example] = []
    for number, chunk in enumerate(text.split(EXAMPLE_END), start=1):
        if not chunk.strip():
            continue
        try:
            prompt, answer = split_example(chunk)
        except ValueError as exc:
            raise DialogueCorpusError(f"{source}: example {number}: {exc}") from None
        if not answer.strip() or "\n" in answer:
            raise DialogueCorpusError(f"{source}: example {number}: the answer must be one non-empty line")
        question_line = prompt[: -len(ANSWER_MARK)].rsplit("\n", 1)[-1]
        if not question_line.startswith("Q: "):
            raise DialogueCorpusError(f"{source}: example {number}: no 'Q: ' line before the answer")
        if known is not None and (unknown := sorted(set(chunk) - known)):
            raise DialogueCorpusError(f"{source}: example {number}: characters the model does not know: "
                                      f"{''.join(unknown)!r}")
        examples.append(Example(prompt, question_line[3:], answer))
    if not examples:
        raise DialogueCorpusError(f"{source}: no dialogue examples")
    return examples


def use_fused_attention(module: Any) -> None:
    """Swap one CausalSelfAttention's forward for torch's fused kernel (same math, same weights)."""

    def forward(self: Any, x: torch.Tensor) -> torch.Tensor:
        batch, seq, channels = x.shape
        q, k, v = self.c_attn(x).split(channels, dim=2)
        shape = (batch, seq, self.n_head, channels // self.n_head)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(batch, seq, channels))

    module.forward = types.MethodType(forward, module)


def encode_rows(items: Sequence[Any], tokenizer: Any, block_size: int, answers_per_row: int = 1) -> list[Row]:
    """Training rows: (ids, answer spans). A row is one dialogue's prompt, answer and end of line,
    then, with ``answers_per_row`` > 1, more questions and answers about the same snapshot
    ("Q: ...\\nA: ...\\n"): the first answer sits exactly where it does when the assistant asks, the
    others reuse the same context for more answers per forward pass. Spans are [start, end) of the
    characters that carry loss (each answer and its end of line). Items have ``prompt``,
    ``question``, ``answer``, ``preset`` and ``t_s`` (Example, or tools/dialogues.Dialogue)."""
    rows: list[Row] = []
    i = 0
    while i < len(items):
        first = items[i]
        text, spans = first.prompt, []
        qas = []
        j = i
        while j < len(items) and j - i < answers_per_row and (items[j].preset, items[j].t_s) == (first.preset, first.t_s):
            qas.append((items[j].question, items[j].answer))
            j += 1
        for n, (question, answer) in enumerate(qas):
            head = f"Q: {question}\nA: " if n else ""
            if n and len(text) + len(head) + len(answer) + 1 > block_size + 1:
                if n < j - i:
                    j = i + n  # the next dialogue starts a row of its own
                break
            text += head
            spans.append((len(text), len(text) + len(answer) + 1))
            text += answer + "\n"
        ids = tokenizer.encode(text)
        if len(ids) - 1 > block_size:
            raise ValueError(f"a training row is {len(ids)} characters: block_size {block_size} is too small")
        rows.append((ids, spans))
        i = j
    return rows


def masked_batch(rows: Sequence[Row], indices: Iterable[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets, one row per example, right-padded; targets -1 except on the answers."""
    indices = list(indices)
    width = max(len(rows[i][0]) for i in indices) - 1
    inputs = torch.zeros((len(indices), width), dtype=torch.long)
    targets = torch.full((len(indices), width), -1, dtype=torch.long)
    for row, i in enumerate(indices):
        ids, spans = rows[i]
        seq = torch.tensor(ids, dtype=torch.long)
        inputs[row, : len(ids) - 1] = seq[:-1]
        for start, end in spans:  # position p predicts ids[p + 1]
            targets[row, start - 1: end - 1] = seq[start:end]
    return inputs, targets


def masked_loss(model: Any, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the answer positions only (targets -1 elsewhere)."""
    logits, _ = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
