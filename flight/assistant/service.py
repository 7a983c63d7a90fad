"""The assistant: questions in (``assistant.ASK question=...``), answers out as events.

Each answer is grounded in live telemetry (flight/assistant/facts.py). If a language model is
available and the GPU may run inference now (it is up, and the mode permits inference), the model
writes the answer from the facts and the question; the checker (flight/assistant/answers.py) compares its
facts with telemetry, and on any disagreement the template answer goes out instead and the
disagreement is counted. Without a model, or with the GPU off, the template answers. Every
question and answer is an ``ASSISTANT_ANSWER`` event (request id, question, answer, source).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable

from flight.assistant.answers import check_answer, classify, model_prompt, template_answer
from flight.assistant.facts import TOPICS, Facts, read_facts
from flight.assistant.regions import RegionMap
from flight.bus import Bus
from flight.command_server import CommandServer
from flight.events import EventReporter
from flight.rate_group import TickContext

if TYPE_CHECKING:
    from flight.assistant.backends import TextGenerator

COMPONENT = "assistant"
MAX_ANSWER_TOKENS = 160


class Assistant:
    def __init__(self, bus: Bus, utc_at: Callable[[int], datetime], *,
                 generator: Callable[[], TextGenerator | None] | None = None,
                 regions: RegionMap | None = None) -> None:
        self.regions = regions if regions is not None else RegionMap.load()
        self._utc_at = utc_at
        self._generator = generator
        self._pub = bus.publisher(COMPONENT)
        self._events = EventReporter(bus, COMPONENT)
        self._tlm = bus.subscribe(list(TOPICS), policy="latest", name="assistant-telemetry")
        self.commands = CommandServer(bus, COMPONENT, {"ASK": self._ask}, on_reset_counters=self._reset)
        self._now_ns = 0
        self._next_request = 1
        self.asked = 0
        self.model_answers = 0
        self.fallbacks = 0  # the model's answer disagreed with telemetry: the template went out
        self.template_answers = 0  # no model, or no GPU time for it
        self.last_check_problems: tuple[str, ...] = ()

    def _reset(self) -> None:
        self.asked = self.model_answers = self.fallbacks = self.template_answers = 0

    # -- the frame ------------------------------------------------------------------------------

    def run(self, ctx: TickContext) -> None:
        """Take in telemetry, then answer the questions of this tick."""
        self._now_ns = ctx.t_ns
        self._tlm.drain()
        self.commands.execute_commands(ctx)

    def publish_telemetry(self, ctx: TickContext | None = None) -> None:
        self._pub.publish(f"tlm.{COMPONENT}", {
            "asked": self.asked, "model_answers": self.model_answers, "fallbacks": self.fallbacks,
            "template_answers": self.template_answers,
            "cmd_accepted": self.commands.accepted, "cmd_rejected": self.commands.rejected,
        })

    # -- answering ------------------------------------------------------------------------------

    def facts(self) -> Facts:
        latest = {topic: m for topic in TOPICS if (m := self._tlm.latest(topic)) is not None}
        return read_facts(latest, self._now_ns, self._utc_at, self.regions)

    def answer(self, question: str) -> tuple[str, str]:
        """(answer, source) for a question now; source "model" or "template"."""
        facts = self.facts()
        reference = template_answer(question, facts)
        generator = self._generator() if self._generator is not None and self._gpu_may_infer() else None
        if generator is None:
            self.template_answers += 1
            return reference, "template"
        try:
            text = generator.generate(model_prompt(question, facts), MAX_ANSWER_TOKENS).split("\n", 1)[0].strip()
        except ValueError as exc:  # e.g. characters the onboard model does not know
            text = f"(no answer: {exc})"
        names = tuple(r.name for r in self.regions.regions) + facts.stations
        result = check_answer(text, reference, names)
        self.last_check_problems = result.problems
        if not result.ok:
            self.fallbacks += 1
            return reference, "template"
        self.model_answers += 1
        return text, "model"

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
        answer, source = self.answer(question)
        self._events.emit("ACTIVITY_HI", "ASSISTANT_ANSWER", f"Q{request}: {question} A: {answer}",
                          request=request, question=question, answer=answer, source=source,
                          intent=classify(question), problems=list(self.last_check_problems) if source == "template"
                          and self.last_check_problems else [])
        self.last_check_problems = ()
