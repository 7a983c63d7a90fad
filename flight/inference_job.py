"""The onboard inference job: prompts commanded from the ground, answered by the model trained on
board, as GPU work admitted before training.

``ASK {prompt, max_new_tokens}`` on ``cmd.inference`` queues a request (validated: length, and
only characters the model knows). Its modelled cost is ``ref_s_per_token`` reference seconds per
prompt and generated token; the job declares the queue's outstanding work as its demand
(kind inference, priority above training) and takes the GPU work it is granted first in each
frame. When a request's work is done it is answered: in ``real`` compute mode by greedy decoding
with the weights of the newest verified training checkpoint (really computed on the host), in
``modeled`` mode with no text. Each answer is an ``INFERENCE_ANSWER`` event.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from flight.admission import is_granted
from flight.bus import Bus
from flight.checkpoint import CheckpointStore
from flight.command_server import CommandRejected, CommandServer, require_number
from flight.compute import ComputeHandle
from flight.events import EventReporter
from flight.rate_group import TickContext
from flight.training.corpus import CharTokenizer, load_default_corpus
from flight.training.finetune import model_from_checkpoint_state

INFERENCE_PRIORITY = 1
MAX_PROMPT_CHARS = 256
MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class InferenceJobConfig:
    compute: str = "real"
    ref_s_per_token: float = 0.01
    max_queue: int = 16


@dataclass
class _Request:
    request_id: int
    prompt: str
    max_new_tokens: int
    work_ref_s: float
    done_ref_s: float = 0.0


class InferenceJob:
    name = "inference"

    def __init__(self, bus: Bus, compute: ComputeHandle, checkpoints: CheckpointStore,
                 config: InferenceJobConfig = InferenceJobConfig(), text: str | None = None) -> None:
        self.config = config
        self.compute = compute
        self.checkpoints = checkpoints
        self._text = text
        self._tokenizer = CharTokenizer(text if text is not None else load_default_corpus())
        self._pub = bus.publisher("inference")
        self._events = EventReporter(bus, "inference")
        self._inputs = bus.subscribe(["tlm.power"], policy="latest", name="inference-job")
        self.commands = CommandServer(bus, "inference", {"ASK": self._ask})
        self._queue: deque[_Request] = deque()
        self._next_id = 1
        self._model: tuple[Any, CharTokenizer] | None = None  # (GPT, tokenizer) of the loaded checkpoint
        self._model_checkpoint: str | None = None
        self.answered = 0
        self.rejected_full = 0

    @property
    def outstanding_ref_s(self) -> float:
        return sum(r.work_ref_s - r.done_ref_s for r in self._queue)

    def _ask(self, args: dict[str, Any]) -> None:
        prompt = args.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise CommandRejected("FORMAT_ERROR", "argument 'prompt' must be a non-empty string")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise CommandRejected("VALIDATION_ERROR",
                                  f"argument 'prompt' has {len(prompt)} characters, at most {MAX_PROMPT_CHARS}")
        unknown = sorted(set(prompt) - set(self._tokenizer.vocab))
        if unknown:
            raise CommandRejected("VALIDATION_ERROR", f"argument 'prompt' has characters the model does not know: "
                                                      f"{''.join(unknown)!r}")
        tokens = int(require_number({"max_new_tokens": args.get("max_new_tokens", 64)}, "max_new_tokens",
                                    1, MAX_NEW_TOKENS))
        if len(self._queue) >= self.config.max_queue:
            self.rejected_full += 1
            raise CommandRejected("BUSY", f"inference queue full ({self.config.max_queue} requests)")
        work = (len(prompt) + tokens) * self.config.ref_s_per_token
        self._queue.append(_Request(self._next_id, prompt, tokens, work))
        self._events.emit("ACTIVITY_LO", "INFERENCE_QUEUED", f"request {self._next_id}: {len(prompt)} characters, "
                          f"{tokens} tokens, {work:.2f} reference s", request=self._next_id)
        self._next_id += 1

    # -- the frame ------------------------------------------------------------------------------

    def run(self, ctx: TickContext) -> None:
        self.commands.execute_commands(ctx)
        self._inputs.drain()
        power = self._inputs.latest("tlm.power")
        granted = is_granted(power, self.name)
        if not self.compute.ready():
            self._model = None  # device memory is gone with the power
        # Take at most what the queue still needs; training gets the rest of the frame's work.
        self.compute.limit_ref_s = self.outstanding_ref_s
        work_ref_s = self.compute.take_work_ref_s()
        while self._queue and work_ref_s > 0.0:
            head = self._queue[0]
            used = min(work_ref_s, head.work_ref_s - head.done_ref_s)
            head.done_ref_s += used
            work_ref_s -= used
            if head.done_ref_s >= head.work_ref_s - 1e-12:
                self._answer(self._queue.popleft())
        self.compute.set_busy(granted and bool(self._queue) and self.compute.ready())
        self._pub.publish("tlm.inference", {
            "queued": len(self._queue),
            "answered": self.answered,
            "rejected_full": self.rejected_full,
            "demand_kind": "inference",
            "demand_priority": INFERENCE_PRIORITY,
            "demand_ref_s": self.outstanding_ref_s,
            "cmd_accepted": self.commands.accepted,
            "cmd_rejected": self.commands.rejected,
        })

    def _answer(self, request: _Request) -> None:
        text = self._generate(request) if self.config.compute == "real" else None
        self.answered += 1
        shown = text if text is not None else "(modeled compute: no text)"
        self._events.emit("ACTIVITY_HI", "INFERENCE_ANSWER", f"request {request.request_id}: {shown}",
                          request=request.request_id, prompt=request.prompt, answer=text)

    def _generate(self, request: _Request) -> str | None:
        newest = self.checkpoints.list_checkpoints()
        if self._model is None or (newest and newest[-1].name != self._model_checkpoint):
            loaded = self.checkpoints.load_latest()
            if loaded is None:
                return None  # nothing trained yet
            self._model = model_from_checkpoint_state(loaded[0], self._text)
            self._model_checkpoint = loaded[1].path.name
        model, tokenizer = self._model
        block = model.config.block_size
        idx = torch.tensor([tokenizer.encode(request.prompt)[-block:]], dtype=torch.long)
        model.eval()
        with torch.no_grad():
            out = model.generate(idx, request.max_new_tokens, temperature=0.0)
        return tokenizer.decode(out[0, idx.shape[1]:].tolist())
