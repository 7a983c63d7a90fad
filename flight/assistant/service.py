"""The assistant: questions in (``assistant.ASK question=...``), answers out as events.

Each answer is grounded in live telemetry (flight/assistant/facts.py). The template answer
(flight/assistant/answers.py) is always at hand; a language model may write the answer instead,
but a model answer is GPU work, and GPU work is admitted by the power manager like any other:

- At the question, with a model available and the GPU up in a mode that permits inference, the
  question is queued with its modelled cost (the generator's ``modelled_work_ref_s``: reference
  seconds, i.e. seconds of work at full-TDP throughput). The queue's outstanding work is the
  assistant's demand (kind inference, priority 1: before training) in ``tlm.assistant``, which
  the power manager admits in the next frame (``flight.admission``).
- Each frame the assistant takes from the shared GPU (flight/compute.py) the work done under its
  previous grant, at most what that grant paid for; the energy of that work at the frame's cap
  is booked (``model_gpu_s``, ``model_energy_wh``). When a question's work is done, the model's
  text is computed (on the host, at once: the mission time it takes is the modelled GPU time,
  spent before) and checked against telemetry; on any disagreement the template goes out
  instead (``fallbacks``).
- A queued question that the power manager's decision does not cover (no grant: the GPU is off
  or inference is not permitted or there is no allowance), or that waits longer than
  ``max_wait_s``, is answered from the template at once and counted in ``no_allowance``.

Counters partition the questions: ``asked = model_answers + fallbacks + template_answers (no model)
+ no_allowance + queued``. Every answer is an ``ASSISTANT_ANSWER`` event (request id, question,
answer, source, and why a template went out). The model is asked for lazily, at the first
question: a generator factory that raises ``ModelUnavailable`` means templates for good, reported
once as ``ASSISTANT_NO_MODEL``; a model that loads is announced as ``ASSISTANT_MODEL``.

Without a compute handle (no power manager in the loop, e.g. a bench) a model answers at once
when the GPU is up and the mode permits inference.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from flight.admission import GpuPerformanceModel
from flight.assistant.answers import check_answer, classify, model_prompt, template_answer
from flight.assistant.facts import TOPICS, Facts, read_facts
from flight.assistant.regions import RegionMap
from flight.bus import Bus
from flight.command_server import CommandServer
from flight.events import EventReporter
from flight.rate_group import TickContext

if TYPE_CHECKING:
    from flight.assistant.backends import TextGenerator
    from flight.compute import ComputeHandle

COMPONENT = "assistant"
MAX_ANSWER_TOKENS = 160
ASSISTANT_PRIORITY = 1  # interactive inference: admitted with the inference job, before training (10)


class ModelUnavailable(RuntimeError):
    """Raised by a generator factory that has no model to give; the message says why."""


@dataclass(frozen=True)
class AssistantConfig:
    # Cost per prompt character and answer token for a generator that does not model its own
    # (flight/assistant/backends.py explains the figure for the onboard GPT).
    ref_s_per_token: float = 1e-3
    # A queued question not answered by then gets the template (the GPU was slower than modelled).
    max_wait_s: float = 60.0
    max_queue: int = 8
    performance: GpuPerformanceModel = GpuPerformanceModel()


@dataclass
class _Question:
    request: int
    question: str
    prompt: str
    reference: str
    names: tuple[str, ...]
    generator: Any
    work_ref_s: float
    asked_tick: int
    asked_t_ns: int
    done_ref_s: float = 0.0

    @property
    def outstanding_ref_s(self) -> float:
        return max(self.work_ref_s - self.done_ref_s, 0.0)


class Assistant:
    def __init__(self, bus: Bus, utc_at: Callable[[int], datetime], *,
                 generator: Callable[[], TextGenerator | None] | None = None,
                 regions: RegionMap | None = None, compute: ComputeHandle | None = None,
                 config: AssistantConfig = AssistantConfig()) -> None:
        self.regions = regions if regions is not None else RegionMap.load()
        self.config = config
        self._utc_at = utc_at
        self._generator = generator
        self._compute = compute
        self._pub = bus.publisher(COMPONENT)
        self._events = EventReporter(bus, COMPONENT)
        self._tlm = bus.subscribe([*TOPICS, "tlm.power"], policy="latest", name="assistant-telemetry")
        self.commands = CommandServer(bus, COMPONENT, {"ASK": self._ask}, on_reset_counters=self._reset)
        self._now_ns = 0
        self._tick = 0
        self._next_request = 1
        self._queue: deque[_Question] = deque()
        self._last_grant_s = 0.0  # GPU seconds granted to the assistant in the previous frame
        self._last_cap_w = 0.0
        self._demand_published = False
        self._busy = False
        self.model_name: str | None = None  # the model that answers, once asked for
        self.model_error: str | None = None  # why there is none
        self.asked = 0
        self.model_answers = 0
        self.fallbacks = 0  # the model's answer disagreed with telemetry: the template went out
        self.template_answers = 0  # no model
        self.no_allowance = 0  # a model, but no GPU time granted for it: the template went out
        self.model_gpu_s = 0.0  # GPU seconds (at the frame's cap) spent on the model's answers
        self.model_energy_wh = 0.0

    def _reset(self) -> None:
        self.asked = self.model_answers = self.fallbacks = self.template_answers = self.no_allowance = 0
        self.model_gpu_s = self.model_energy_wh = 0.0

    @property
    def outstanding_ref_s(self) -> float:
        return sum(q.outstanding_ref_s for q in self._queue)

    # -- the frame ------------------------------------------------------------------------------

    def run(self, ctx: TickContext) -> None:
        """Take in telemetry, take in this tick's questions, then serve the queue with the GPU
        work the power manager granted."""
        self._now_ns = ctx.t_ns
        self._tick = ctx.tick
        self._tlm.drain()
        self.commands.execute_commands(ctx)
        if self._compute is not None:
            self._serve_queue(ctx)

    def _telemetry(self) -> dict[str, Any]:
        return {
            "asked": self.asked, "model_answers": self.model_answers, "fallbacks": self.fallbacks,
            "template_answers": self.template_answers, "no_allowance": self.no_allowance,
            "queued": len(self._queue), "model_gpu_s": self.model_gpu_s, "model_energy_wh": self.model_energy_wh,
            "demand_kind": "inference", "demand_priority": ASSISTANT_PRIORITY,
            "demand_ref_s": self.outstanding_ref_s,
            "cmd_accepted": self.commands.accepted, "cmd_rejected": self.commands.rejected,
        }

    def publish_telemetry(self, ctx: TickContext | None = None) -> None:
        self._pub.publish(f"tlm.{COMPONENT}", self._telemetry())

    def summary(self) -> dict[str, Any]:
        """Counters and the model's energy, for a run summary."""
        body = self._telemetry()
        return {"model": self.model_name, "model_error": self.model_error,
                **{k: body[k] for k in ("asked", "model_answers", "fallbacks", "template_answers", "no_allowance",
                                        "queued", "model_gpu_s", "model_energy_wh")}}

    # -- answering ------------------------------------------------------------------------------

    def facts(self) -> Facts:
        latest = {topic: m for topic in TOPICS if (m := self._tlm.latest(topic)) is not None}
        return read_facts(latest, self._now_ns, self._utc_at, self.regions)

    def _model(self) -> TextGenerator | None:
        """The generator, asked for at each question (the factory loads it once); the first
        outcome, and any change, is reported as an event."""
        if self._generator is None:
            return None
        try:
            generator = self._generator()
            error = None if generator is not None else "no model configured"
        except ModelUnavailable as exc:
            generator, error = None, str(exc) or "no model"
        name = getattr(generator, "name", type(generator).__name__) if generator is not None else None
        if generator is not None and name != self.model_name:
            self._events.emit("ACTIVITY_LO", "ASSISTANT_MODEL", f"language model {name} answers", model=name)
        elif generator is None and error != self.model_error:
            self._events.emit("WARNING_LO", "ASSISTANT_NO_MODEL",
                              f"no language model ({error}): answering from templates", reason=error)
        self.model_name, self.model_error = name, error
        return generator

    def _gpu_may_infer(self) -> bool:
        """The GPU is up (idle or busy) and the mode permits inference (NOMINAL, LOW_POWER)."""
        gpu, modes = self._tlm.latest("tlm.gpu"), self._tlm.latest("tlm.modes")
        return (gpu is not None and gpu.body.get("state") in ("idle", "busy")
                and modes is not None and "inference" in (modes.body.get("permitted_work") or ()))

    def _ask(self, args: dict[str, Any]) -> None:
        question = args["question"].strip()
        request = self._next_request
        self._next_request += 1
        self.asked += 1
        facts = self.facts()
        reference = template_answer(question, facts)
        generator = self._model()
        if generator is None:
            self.template_answers += 1
            why = f"no language model ({self.model_error})" if self.model_error else "no language model"
            self._emit(request, question, reference, "template", why)
            return
        if not self._gpu_may_infer():
            self._no_allowance(request, question, reference, "GPU off or inference not permitted")
            return
        prompt = model_prompt(question, facts)
        names = tuple(r.name for r in self.regions.regions) + facts.stations
        if self._compute is None:
            self._finish(_Question(request, question, prompt, reference, names, generator,
                                   0.0, self._tick, self._now_ns))
            return
        if len(self._queue) >= self.config.max_queue:
            self._no_allowance(request, question, reference,
                               f"{self.config.max_queue} questions already wait for the GPU")
            return
        cost = getattr(generator, "modelled_work_ref_s", None)
        work_ref_s = (float(cost(prompt, MAX_ANSWER_TOKENS)) if callable(cost)
                      else (len(prompt) + MAX_ANSWER_TOKENS) * self.config.ref_s_per_token)
        self._queue.append(_Question(request, question, prompt, reference, names, generator,
                                     work_ref_s, self._tick, self._now_ns))

    def _serve_queue(self, ctx: TickContext) -> None:
        power = self._tlm.latest("tlm.power")
        body = power.body if power is not None else {}
        grants = body.get("grants")
        grant_s = float(grants.get(COMPONENT) or 0.0) if isinstance(grants, dict) else 0.0
        cap_w = float(body.get("cap_w") or 0.0)
        if not self._queue and not self._busy and not self._demand_published:
            # Nobody asked: nothing to take, finish, drop, set busy or publish (what the full pass below
            # would conclude, ~2 us later); only the grant is kept, for a question in the next frame.
            self._last_grant_s, self._last_cap_w = grant_s, cap_w
            return
        # The shared GPU's pool holds the work of the step since the previous frame, whose
        # decision granted us _last_grant_s: take ours, at most what that grant paid for.
        fraction = self.config.performance.throughput_fraction(self._last_cap_w)
        if self._queue and self._last_grant_s > 0.0 and fraction > 0.0:
            self._compute.limit_ref_s = min(self.outstanding_ref_s, self._last_grant_s * fraction)
            work_ref_s = self._compute.take_work_ref_s()
            busy_s = work_ref_s / fraction
            self.model_gpu_s += busy_s
            self.model_energy_wh += self._last_cap_w * busy_s / 3600.0
            while self._queue and work_ref_s > 0.0:
                head = self._queue[0]
                used = min(work_ref_s, head.outstanding_ref_s)
                head.done_ref_s += used
                work_ref_s -= used
                if head.outstanding_ref_s <= 1e-12:
                    self._finish(self._queue.popleft())
        while self._queue and self._queue[0].outstanding_ref_s <= 1e-12:  # costless (a zero-cost model)
            self._finish(self._queue.popleft())
        self._last_grant_s, self._last_cap_w = grant_s, cap_w
        ready = self._compute.ready()
        waiting: deque[_Question] = deque()
        for q in self._queue:
            # This frame's decision saw the demand of every question asked before it.
            if q.asked_tick < ctx.tick and grant_s <= 0.0:
                self._no_allowance(q.request, q.question, q.reference, "the power manager granted no GPU time")
            elif not ready:
                self._no_allowance(q.request, q.question, q.reference, "the GPU is not ready")
            elif (ctx.t_ns - q.asked_t_ns) / 1e9 > self.config.max_wait_s:
                self._no_allowance(q.request, q.question, q.reference,
                                   f"no GPU time within {self.config.max_wait_s:g} s")
            else:
                waiting.append(q)
        self._queue = waiting
        busy = bool(self._queue) and grant_s > 0.0 and ready
        if busy or self._busy:  # untouched while nobody asks: the GPU is the other jobs' alone
            self._compute.set_busy(busy)
        self._busy = busy
        # Demand for the power manager's next decision; published only while there is some (and
        # once more when it is gone), so a run nobody asks anything looks as before.
        if self._queue or self._demand_published:
            self.publish_telemetry()
            self._demand_published = bool(self._queue)

    def _no_allowance(self, request: int, question: str, reference: str, why: str) -> None:
        self.no_allowance += 1
        self._emit(request, question, reference, "template", f"no GPU allowance for the model: {why}")

    def _finish(self, q: _Question) -> None:
        """The model writes the answer (on the host), the checker vets it."""
        try:
            text = q.generator.generate(q.prompt, MAX_ANSWER_TOKENS).split("\n", 1)[0].strip()
        except ValueError as exc:  # e.g. characters the onboard model does not know
            text = f"(no answer: {exc})"
        result = check_answer(text, q.reference, q.names)
        if not result.ok:
            self.fallbacks += 1
            self._emit(q.request, q.question, q.reference, "template",
                       "the model's answer disagreed with telemetry", result.problems)
            return
        self.model_answers += 1
        self._emit(q.request, q.question, text, "model", "")

    def _emit(self, request: int, question: str, answer: str, source: str, reason: str,
              problems: tuple[str, ...] = ()) -> None:
        self._events.emit("ACTIVITY_HI", "ASSISTANT_ANSWER", f"Q{request}: {question} A: {answer}",
                          request=request, question=question, answer=answer, source=source,
                          intent=classify(question), reason=reason, problems=list(problems))
