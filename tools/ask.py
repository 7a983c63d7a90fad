"""`sunlit ask`: put a question to the onboard assistant.

- Against a running stack (``--endpoint``, with ``--keys``): sends ``assistant.ASK`` through the
  ground link and prints the ``ASSISTANT_ANSWER`` event that comes back.
- At a simulated time of a scenario (``--scenario``, ``--at UTC``; default: the scenario's
  epoch): flies the whole stack in SIL (modeled compute) from the epoch to that time, asks through
  the dispatcher in the tick at that time, and prints the answer. A day of flight takes ~30 s.
  Someone who asks wants the model's words, so the assistant's language model is on by default
  here (``--assistant-model auto``: the Hugging Face directory in $SUNLIT_HF_MODEL when set, else
  the shipped onboard model); ``--template`` asks the templates alone. A model answer waits for
  the GPU time the power manager grants it (a few ticks); without it the template answers, and
  the line under the answer says which answered and why.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from flight.clock import iso_utc, parse_iso_utc

NS_PER_S = 1_000_000_000


MAX_ANSWER_TICKS = 120  # beyond the assistant's own deadline for GPU time (60 s): it always answers by then


def ask_simulated(question: str, scenario: str = "starcloud1", at_utc: datetime | None = None,
                  seed: int = 0, assistant_model: str = "auto") -> dict[str, Any]:
    """The ASSISTANT_ANSWER event's fields at ``at_utc`` of a SIL run of ``scenario``, with
    ``model`` and ``model_error`` (the language model that was asked for, or why there is none)."""
    from sim.scenario import load_scenario
    from sim.sil import SilRun
    from tools.run_sim import resolve_assistant_model

    assistant_model = resolve_assistant_model(assistant_model, "modeled", prefer_model=True)

    loaded = load_scenario(scenario)
    at_utc = at_utc or loaded.epoch_utc
    offset_s = (at_utc - loaded.epoch_utc).total_seconds()
    if offset_s < 0:
        raise ValueError(f"--at {iso_utc(at_utc)} is before the scenario's epoch {iso_utc(loaded.epoch_utc)}")
    with tempfile.TemporaryDirectory(prefix="sunlit-ask-") as folder:
        run = SilRun(loaded, Path(folder), seed=seed, compute="modeled", assistant_model=assistant_model)
        try:
            events = run.bus.subscribe(["evt.assistant"], name="ask-answers")
            run.bus.settle()
            target = math.ceil(offset_s / run.step_s)
            while run.t_s < (target - 1) * run.step_s:
                run.step()
            run.bus.publisher("ask_tool").publish("cmd.dispatch", {
                "id": 1, "command": "assistant.ASK", "args": {"question": question}})
            # Asked in the next tick (at the epoch itself, one step after it); a template answers in
            # that tick, the model once its GPU time has been granted and done.
            for _ in range(MAX_ANSWER_TICKS):
                run.step()
                for message in events.drain():
                    if message.body.get("name") == "ASSISTANT_ANSWER":
                        return {**message.body, "utc": iso_utc(run.clock.utc_at(message.t_ns), "seconds"),
                                "scenario": loaded.name, "model": run.assistant.model_name,
                                "model_error": run.assistant.model_error}
                if not run.assistant.outstanding_ref_s:
                    break  # nothing waits for the GPU, yet no answer: the dispatcher refused the question
        finally:
            run.close()
    raise RuntimeError("the assistant did not answer (see the dispatcher's response)")


def ask_stack(question: str, endpoint: str, client_secret: Path | None, server_public: Path | None,
              timeout_s: float = 10.0) -> dict[str, Any]:
    from tools.ground_client import GroundClient

    with GroundClient(endpoint, client_secret, server_public, timeout_s=timeout_s) as client:
        client.subscribe(("evt.assistant", "tlm.assistant"))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not client.receive(100):
            pass  # let the subscription join before the answer goes out
        result = client.send_command("assistant.ASK", {"question": question})
        if result.status != "OK":
            raise RuntimeError(f"assistant.ASK: {result.status}: {result.reason}")
        while time.monotonic() < deadline:
            for message in client.receive(200):
                body = message.body
                if message.topic == "evt.assistant" and body.get("name") == "ASSISTANT_ANSWER" \
                        and body.get("question") == question.strip():
                    return {**body, "utc": None}
    raise TimeoutError(f"no answer from the assistant within {timeout_s:g} s")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ask", help="ask the onboard assistant (a running stack, or a scenario at a simulated time)",
        description="Ask the onboard assistant a question: 'Where are you?', 'When is the next eclipse?', "
                    "'How much battery do you have?', 'How hot is the GPU?', 'When is the next pass over "
                    "Santiago?', 'What are you training?'. With --endpoint, a running stack answers; "
                    "otherwise the scenario is flown in SIL to --at and answers there.")
    parser.add_argument("question")
    parser.add_argument("--scenario", default="starcloud1", help="preset name or TOML path (default: starcloud1)")
    parser.add_argument("--at", default=None, metavar="UTC",
                        help="simulated time, ISO 8601 UTC (default: the scenario's epoch)")
    parser.add_argument("--seed", type=int, default=0)
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--assistant-model", default="auto", metavar="{auto,none,onboard,PATH}",
                       help="the language model that answers in the simulated run: auto (default): the Hugging "
                            "Face model directory in $SUNLIT_HF_MODEL when set, else the shipped onboard model; "
                            "none: templates only; onboard: the shipped weights; or PATH: a weights file or a "
                            "Hugging Face model directory. Its answer must agree with telemetry and get GPU time "
                            "from the power manager, else the template answers (the line on stderr says which)")
    model.add_argument("--template", dest="assistant_model", action="store_const", const="none",
                       help="answer from the templates alone (same as --assistant-model none)")
    parser.add_argument("--endpoint", default=None, help="a running stack's command endpoint (sunlit run prints it)")
    parser.add_argument("--keys", type=Path, default=None, metavar="DIR", help="the stack's key folder")
    parser.add_argument("--client", default="operator", help="client key from --keys (default: operator)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S")
    parser.set_defaults(func=run_command)


def run_command(args: Any) -> int:
    from sim.scenario import ScenarioError

    try:
        if args.endpoint is not None:
            keys = args.keys
            answer = ask_stack(args.question, args.endpoint,
                               keys / f"{args.client}.key_secret" if keys else None,
                               keys / "server.key" if keys else None, args.timeout)
        else:
            at = parse_iso_utc(args.at) if args.at else None
            answer = ask_simulated(args.question, args.scenario, at, args.seed, args.assistant_model)
    except (ScenarioError, ValueError, RuntimeError, TimeoutError, OSError) as exc:
        print(f"sunlit ask: {exc}", file=sys.stderr)
        return 2
    print(answer["answer"])
    where = f"{answer['scenario']} at {answer['utc']}, " if answer.get("utc") else ""
    if answer["source"] == "model" and answer.get("model"):
        why = f" by {answer['model']}"
    else:
        why = (f"; {answer['reason']}" if answer.get("reason") else "") + \
              (f" (model {answer['model']})" if answer.get("model") else "")
    print(f"  ({where}{answer['source']} answer{why})", file=sys.stderr)
    return 0

