"""The assistant's language model, measured: fact accuracy, answer latency, training throughput.

Accuracy: held-out dialogues (tools/dialogues.py, evaluation span and seed: times the model never
saw), one question per time, intents mixed, across both presets. For each, the model's first line
(what the service keeps) is checked against the template with ``check_answer``: the share that
passes is the accuracy before fallback. After fallback the service sends the model's line when it
passes and the template otherwise (flight/assistant/service.py); the answer that would go out is
checked again, and the share is reported (1.0 unless the checker rejected its own reference).

Latency: the wall time of ``generate(prompt, MAX_ANSWER_TOKENS)`` per question (the service's
call), at a fixed torch thread count. Training: tokens per second of the fine-tuning loop
(every position of every row counts), measured now on a short run of the shipped configuration,
and the loss curve of the run that built the shipped weights.

On board: the training job's "assistant" task (flight/training/finetune.py) fine-tunes the shipped
weights on a corpus it was not built from (other seed, 800 dialogues), ONBOARD_STEPS steps at the
task's defaults; measured are its tokens per second, the held-out masked loss before and after,
and the fine-tuned model's fact accuracy on the same held-out questions as the shipped model's.

This is wiring: it reads the wall clock.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from flight.assistant.answers import check_answer
from flight.assistant.service import MAX_ANSWER_TOKENS

FULL_TIMES_PER_PRESET = 300   # 600 held-out times in all
QUICK_TIMES_PER_PRESET = 10
FULL_TRAIN_STEPS = 12         # a short run of the shipped configuration, for tokens/s
ONBOARD_TIMES_PER_PRESET = 100  # x 4 questions x 2 presets: 800 dialogues for the onboard fine-tune
ONBOARD_STEPS = 300
ONBOARD_CORPUS_SEED = 1000    # not the shipped corpus's seed: dialogues the model has not seen
LATENCY_THREADS = 1


@dataclass
class EvalReport:
    total: int = 0
    passed: int = 0
    passed_after_fallback: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    by_intent: dict[str, list[int]] = field(default_factory=dict)   # intent -> [passed, total]
    by_preset: dict[str, list[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    num_threads: int = LATENCY_THREADS

    @property
    def accuracy(self) -> float:
        return self.passed / self.total

    @property
    def accuracy_after_fallback(self) -> float:
        return self.passed_after_fallback / self.total

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (a value that was measured, never an interpolation)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def served_answer(generated: str, reference: str, names: tuple[str, ...]) -> tuple[str, bool]:
    """What the service sends for a model's output: its first line if the checker passes it, else
    the template (flight/assistant/service.py, Assistant.answer); and whether the model's line went."""
    text = generated.split("\n", 1)[0].strip()
    if check_answer(text, reference, names).ok:
        return text, True
    return reference, False


def evaluate_model(times_per_preset: int = FULL_TIMES_PER_PRESET, path: str | os.PathLike[str] | None = None,
                   generator: Any = None, num_threads: int = LATENCY_THREADS,
                   progress: Callable[[str], None] | None = None, items: Sequence[Any] | None = None) -> EvalReport:
    """Fact accuracy and latency of a model (default: the shipped one) on held-out dialogues."""
    from tools.dialogues import dialogues

    if generator is None:
        generator = load_any_generator(path)
    if items is None:
        items = dialogues("eval", times_per_preset, 1)
    report = EvalReport(num_threads=num_threads)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        for n, item in enumerate(items, 1):
            t0 = time.perf_counter()
            try:
                generated = generator.generate(item.prompt, MAX_ANSWER_TOKENS)
            except ValueError as exc:  # as the service does: a model that cannot answer is a failed answer
                generated = f"(no answer: {exc})"
            report.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            line = generated.split("\n", 1)[0].strip()
            ok = check_answer(line, item.answer, item.names).ok
            served, _ = served_answer(generated, item.answer, item.names)
            report.total += 1
            report.passed += ok
            report.passed_after_fallback += check_answer(served, item.answer, item.names).ok
            for table, key in ((report.by_intent, item.intent), (report.by_preset, item.preset)):
                table.setdefault(key, [0, 0])
                table[key][0] += ok
                table[key][1] += 1
            if not ok:
                report.failures.append(f"{item.preset} t={item.t_s} Q: {item.question} | want: {item.answer} "
                                       f"| got: {line}")
            if progress is not None and n % 50 == 0:
                progress(f"  {n}/{len(items)}: accuracy {report.accuracy:.4f}")
    finally:
        torch.set_num_threads(threads_before)
    return report


def load_any_generator(path: str | os.PathLike[str] | None = None) -> Any:
    """A weights file's generator (default: the shipped one), or, for a checkpoint folder of an
    assistant fine-tuning run, its newest verified checkpoint's."""
    from flight.assistant.model import AssistantModelError, CheckpointAssistantModel, load_generator
    from flight.checkpoint import CheckpointStore

    if path is not None and Path(path).is_dir():
        generator = CheckpointAssistantModel(CheckpointStore(Path(path)))()
        if generator is None:
            raise AssistantModelError(f"{path}: no verified checkpoint of the assistant fine-tuning task")
        return generator
    return load_generator(path)


def measure_onboard_finetune(quick: bool = False, path: str | os.PathLike[str] | None = None,
                             items: Sequence[Any] | None = None) -> dict[str, Any]:
    """The onboard fine-tuning task from the given (default: shipped) weights; keys below."""
    from flight.assistant.model import AssistantGptGenerator, load_weights
    from flight.training.finetune import (BaseWeights, DialogueData, DialogueTrainer, DialogueTrainerConfig,
                                          assistant_model_from_state)
    from tools.dialogues import corpus_text, dialogues

    times, steps = (5, 3) if quick else (ONBOARD_TIMES_PER_PRESET, ONBOARD_STEPS)
    base = BaseWeights.from_payload(load_weights(path))
    corpus = corpus_text(dialogues("train", times, 4, seed=ONBOARD_CORPUS_SEED))
    data = DialogueData.from_text(corpus, base.vocab, int(base.config["block_size"]))
    config = DialogueTrainerConfig()
    threads_before = torch.get_num_threads()
    try:
        trainer = DialogueTrainer(config, base, data)
        val_before = trainer.evaluate()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step()
        wall_s = time.perf_counter() - t0
        val_after = trainer.evaluate()
        model, tokenizer = assistant_model_from_state(trainer.state_dict())
    finally:
        torch.set_num_threads(threads_before)
    report = evaluate_model(QUICK_TIMES_PER_PRESET if quick else FULL_TIMES_PER_PRESET,
                            generator=AssistantGptGenerator(model, tokenizer), items=items)
    return {
        "assistant_onboard_tokens_per_s": trainer.tokens_trained / wall_s,
        "assistant_onboard_val_loss": [val_before, val_after],
        "assistant_onboard_fact_accuracy": report.accuracy,
        "details": {"steps": steps, "dialogues": len(data.train) + len(data.val), "wall_s": wall_s,
                    "tokens": trainer.tokens_trained, "config": asdict(config),
                    "base_weights_sha256": base.weights_sha256, "weights_sha256": trainer.weights_sha256(),
                    "by_intent": report.by_intent, "failures": report.failures[:20]},
    }


def measure_assistant(quick: bool = False, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The assistant's figures for ``sunlit bench`` (keys below), with their details."""
    from flight.assistant.model import AssistantModelError, load_weights
    from tools.dialogues import QUICK_CONFIG, FineTuneConfig, dialogues, fine_tune

    out: dict[str, Any] = {
        "assistant_fact_accuracy": None, "assistant_fact_accuracy_after_fallback": None,
        "assistant_answer_p50_ms": None, "assistant_answer_p99_ms": None,
        "assistant_train_tokens_per_s": None, "assistant_loss_curve": None,
        "assistant_onboard_tokens_per_s": None, "assistant_onboard_val_loss": None,
        "assistant_onboard_fact_accuracy": None,
    }
    details: dict[str, Any] = {"notes": []}
    try:
        payload = load_weights(path)
    except AssistantModelError as exc:
        payload = None
        details["notes"].append(f"no assistant model: {exc}")
    if payload is not None:
        times = QUICK_TIMES_PER_PRESET if quick else FULL_TIMES_PER_PRESET
        items = dialogues("eval", times, 1)
        report = evaluate_model(times, path=path, items=items)
        out["assistant_fact_accuracy"] = report.accuracy
        out["assistant_fact_accuracy_after_fallback"] = report.accuracy_after_fallback
        out["assistant_answer_p50_ms"] = report.p50_ms
        out["assistant_answer_p99_ms"] = report.p99_ms
        meta = payload.get("meta", {})
        details.update(eval_times=report.total, eval_times_per_preset={k: v[1] for k, v in report.by_preset.items()},
                       by_intent=report.by_intent, by_preset=report.by_preset, latency_threads=report.num_threads,
                       max_new_tokens=MAX_ANSWER_TOKENS, failures=report.failures[:20],
                       weights_sha256=payload["weights_sha256"], model_config=payload["config"],
                       shipped_training={k: meta.get(k) for k in ("tokens_per_s", "train_wall_s", "train_tokens",
                                                                  "corpus_examples", "command", "total_wall_s")})
        if not quick:
            out["assistant_loss_curve"] = [tuple(p) for p in meta.get("curve", [])]
        onboard = measure_onboard_finetune(quick, path, items)
        details["onboard_finetune"] = onboard.pop("details")
        out.update(onboard)
    # Training throughput, measured now: the shipped configuration for a few steps (quick: a tiny model).
    if quick or payload is None:
        config = QUICK_CONFIG
    else:
        shipped = FineTuneConfig(**payload["meta"]["config"]) if "config" in payload.get("meta", {}) \
            else FineTuneConfig()
        config = FineTuneConfig(**{**asdict(shipped), "train_times_per_preset": 8, "val_times_per_preset": 2,
                                   "steps": FULL_TRAIN_STEPS, "eval_every": FULL_TRAIN_STEPS})
    threads_before = torch.get_num_threads()
    try:
        result = fine_tune(config)
    finally:
        torch.set_num_threads(threads_before)
    out["assistant_train_tokens_per_s"] = result.tokens_per_s
    if out["assistant_loss_curve"] is None:
        out["assistant_loss_curve"] = [tuple(p) for p in result.curve]
    details["train_measure"] = {"steps": config.steps, "tokens": result.train_tokens, "wall_s": result.train_wall_s,
                                "num_threads": config.num_threads, "n_layer": config.n_layer,
                                "n_embd": config.n_embd, "block_size": config.block_size,
                                "batch_size": config.batch_size}
    out["details"] = details
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure_assistant(quick="--quick" in sys.argv), indent=2, default=str))
