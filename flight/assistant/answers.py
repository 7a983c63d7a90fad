"""Questions, answers and the fact checker.

A question is sorted into an intent by keywords (where, eclipse, battery, GPU temperature, pass,
training). For each intent there is a template answer built from the Facts: it is the fallback,
the reference the checker compares a model's answer with, and the target text of the fine-tuning
dialogues (flight/assistant/dialogues.py). A model sees ``context_line(facts)`` (the facts,
compact, ASCII) then the question, and writes the answer.

The checker pulls every fact out of an answer — region names, clock times ("07:05 UTC"),
durations ("in 20 minutes"), percentages, temperatures, powers, station names, elevations, step
counts — and compares them with the template's: a fact the template has must be there and right
(times and durations within a minute), and no other fact may appear. Wording is free; facts are
not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from flight.assistant.facts import Facts
from flight.assistant.regions import phrase

INTENTS = ("where", "eclipse", "battery", "gpu", "pass", "training", "help")
TIME_TOLERANCE_S = 60.0
_KEYWORDS = (
    ("pass", ("pass", "station", "contact", "ground station", "downlink", "talk to")),
    ("eclipse", ("eclipse", "shadow", "dark", "sunlight", "sunset", "sunrise", "sun ")),
    ("battery", ("battery", "charge", "energy", "power left", "soc")),
    ("gpu", ("hot", "temperature", "temp", "warm", "cold", "gpu", "heat")),
    ("training", ("training", "train", "learning", "learn", "model", "loss")),
    ("where", ("where", "location", "position", "above", "over", "flying")),
)


_NAMED_PLACE = re.compile(r"\b(?:over|at|above|from)\s+[A-Z]")


def classify(question: str) -> str:
    text = f" {question.lower()} "
    for intent, words in _KEYWORDS:
        if any(word in text for word in words):
            return intent
    return "help"


def station_in(question: str, stations: tuple[str, ...]) -> str | None:
    """The known station a question names (case-insensitive), or None."""
    text = question.lower()
    for station in sorted(stations, key=len, reverse=True):
        if station.lower() in text:
            return station
    return None


def _hhmm(utc: datetime) -> str:
    """Clock time to the nearest minute, so the stated time is within 30 s of the fact."""
    seconds = utc.hour * 3600 + utc.minute * 60 + utc.second + utc.microsecond / 1e6
    minutes = int(seconds / 60 + 0.5) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d} UTC"


def _minutes(seconds: float) -> str:
    m = max(0, int(seconds / 60 + 0.5))
    return "less than a minute" if m == 0 else ("1 minute" if m == 1 else f"{m} minutes")


def template_answer(question: str, facts: Facts) -> str:
    """The answer, from telemetry alone."""
    intent = classify(question)
    if intent == "where":
        if facts.region is None:
            return "I have no position fix yet."
        here = f"I'm {phrase(facts.region)}"
        if facts.next_region is None:
            return f"{here}, and I'll stay {phrase(facts.region)} for the next two hours."
        return (f"{here}, I'll be {phrase(facts.next_region)} in {_minutes(facts.next_region_in_s)}, "
                f"at {_hhmm(facts.next_region_utc)}.")
    if intent == "eclipse":
        if facts.in_umbra:
            if facts.eclipse_end_utc is None:
                return "I'm in the Earth's shadow now."
            return (f"I'm in eclipse now; the Sun comes back in {_minutes(facts.eclipse_end_in_s)}, "
                    f"at {_hhmm(facts.eclipse_end_utc)}.")
        if facts.eclipse_start_utc is None:
            return "No eclipse is predicted in the next hours."
        length_s = facts.eclipse_end_in_s - facts.eclipse_start_in_s
        return (f"The next eclipse starts in {_minutes(facts.eclipse_start_in_s)}, at "
                f"{_hhmm(facts.eclipse_start_utc)}, and lasts {_minutes(length_s)}.")
    if intent == "battery":
        if facts.battery_soc is None:
            return "I have no battery telemetry yet."
        text = f"My battery is at {100 * facts.battery_soc:.0f}%"
        if facts.battery_energy_wh is not None:
            text += f" ({facts.battery_energy_wh:.0f} Wh of {facts.battery_capacity_wh:.0f} Wh)"
        if facts.battery_power_w is not None and abs(facts.battery_power_w) >= 1.0:
            verb = "charging" if facts.battery_power_w > 0 else "discharging"
            text += f", {verb} at {abs(facts.battery_power_w):.0f} W"
        return text + "."
    if intent == "gpu":
        if facts.gpu_temp_c is None:
            return "I have no GPU temperature yet."
        if facts.gpu_state in (None, "off"):
            return f"My GPU is off; its die is at {facts.gpu_temp_c:.1f} °C."
        power = f", drawing {facts.gpu_power_w:.0f} W" if facts.gpu_power_w is not None else ""
        return f"My GPU is {facts.gpu_state} at {facts.gpu_temp_c:.1f} °C{power}."
    if intent == "pass":
        station = station_in(question, facts.stations)
        if station is None and _NAMED_PLACE.search(question):
            named = ", ".join(facts.stations) or "none"
            return f"I don't know that ground station; I know: {named}."
        candidates = [facts.passes[station]] if station in facts.passes else (
            [] if station is not None else sorted(facts.passes.values(), key=lambda p: p.aos_in_s))
        if not candidates:
            where = f"over {station} " if station else ""
            return f"No pass {where}is predicted in the next 24 hours."
        p = candidates[0]
        return (f"The next pass over {p.station} starts in {_minutes(p.aos_in_s)}, at {_hhmm(p.aos_utc)}, "
                f"and reaches {p.max_elevation_deg:.0f}° elevation.")
    if intent == "training":
        if facts.training_steps is None:
            return "I'm not training anything yet."
        loss = f", loss {facts.training_loss:.2f}" if facts.training_loss is not None else ""
        return (f"I'm training a small character-level GPT on board: step {facts.training_steps}{loss}, "
                f"{facts.training_state or 'idle'}.")
    return ("I can tell you where I am, when the next eclipse is, how much battery I have, how hot my GPU "
            "is, when the next pass over a ground station is, and what I'm training.")


def context_line(facts: Facts) -> str:
    """The facts as a model sees them: compact, ASCII-ish, in a fixed order, every value already in
    the words and units an answer uses (a small model copies; it need not do arithmetic)."""
    parts = [f"now {_hhmm(facts.utc)}"]
    if facts.region is not None:
        parts.append(f"here {phrase(facts.region)}")
    if facts.next_region is not None:
        parts.append(f"next {phrase(facts.next_region)} in {_minutes(facts.next_region_in_s)} at "
                     f"{_hhmm(facts.next_region_utc)}")
    if facts.in_umbra and facts.eclipse_end_utc is not None:
        parts.append(f"eclipse now, sun in {_minutes(facts.eclipse_end_in_s)} at {_hhmm(facts.eclipse_end_utc)}")
    elif facts.eclipse_start_utc is not None:
        parts.append(f"eclipse in {_minutes(facts.eclipse_start_in_s)} at {_hhmm(facts.eclipse_start_utc)} "
                     f"lasts {_minutes(facts.eclipse_end_in_s - facts.eclipse_start_in_s)}")
    if facts.battery_soc is not None:
        battery = f"battery {100 * facts.battery_soc:.0f}%"
        if facts.battery_energy_wh is not None:
            battery += f" {facts.battery_energy_wh:.0f} Wh of {facts.battery_capacity_wh:.0f} Wh"
        if facts.battery_power_w is not None and abs(facts.battery_power_w) >= 1.0:
            battery += f" {'charging' if facts.battery_power_w > 0 else 'discharging'} {abs(facts.battery_power_w):.0f} W"
        parts.append(battery)
    if facts.gpu_temp_c is not None:
        gpu = f"gpu {facts.gpu_state or 'off'} {facts.gpu_temp_c:.1f} °C"
        if facts.gpu_state not in (None, "off") and facts.gpu_power_w is not None:
            gpu += f" {facts.gpu_power_w:.0f} W"
        parts.append(gpu)
    for p in sorted(facts.passes.values(), key=lambda p: p.aos_in_s):
        parts.append(f"pass {p.station} in {_minutes(p.aos_in_s)} at {_hhmm(p.aos_utc)} "
                     f"{p.max_elevation_deg:.0f}° elevation")
    if facts.training_steps is not None:
        loss = f" loss {facts.training_loss:.2f}" if facts.training_loss is not None else ""
        parts.append(f"training step {facts.training_steps}{loss} {facts.training_state or 'idle'}")
    return "; ".join(parts)


def model_prompt(question: str, facts: Facts) -> str:
    return f"[{context_line(facts)}]\nQ: {question}\nA: "


# --------------------------------------------------------------------------------- the checker

_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_DURATION = re.compile(r"\b(\d+) minutes?\b|\bless than a minute\b")
_PERCENT = re.compile(r"(-?\d+(?:\.\d+)?)\s*%")
_TEMP = re.compile(r"(-?\d+(?:\.\d+)?)\s*°?\s*C\b")
_WATTS = re.compile(r"(-?\d+(?:\.\d+)?)\s*W(?:h)?\b")
_DEGREES = re.compile(r"(\d+(?:\.\d+)?)\s*°\s*elevation")
_STEP = re.compile(r"\bstep (\d+)\b")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    problems: tuple[str, ...] = ()


def extract(answer: str, names: tuple[str, ...]) -> dict[str, list]:
    """Every fact an answer states, by kind."""
    text = answer
    found_names = []
    for name in sorted(names, key=len, reverse=True):  # "North Atlantic" before "Atlantic"
        if name in text:
            found_names.append(name)
            text = text.replace(name, " ")
    minutes = [0 if m.group(1) is None else int(m.group(1)) for m in _DURATION.finditer(text)]
    return {
        "names": sorted(found_names),
        "times": [int(h) * 60 + int(m) for h, m in _TIME.findall(text)],
        "minutes": minutes,
        "percent": [float(v) for v in _PERCENT.findall(text)],
        "temp": [float(v) for v in _TEMP.findall(text)],
        "watts": [float(v) for v in _WATTS.findall(text)],
        "elevation": [float(v) for v in _DEGREES.findall(text)],
        "steps": [int(v) for v in _STEP.findall(text)],
    }


def _close(kind: str, a: float, b: float) -> bool:
    if kind == "times":
        diff = abs(a - b) % (24 * 60)
        return min(diff, 24 * 60 - diff) <= TIME_TOLERANCE_S / 60
    tolerance = {"minutes": 1.0, "percent": 1.0, "temp": 0.15, "watts": 1.0, "elevation": 1.0, "steps": 0.0}[kind]
    return abs(a - b) <= tolerance


def check_answer(answer: str, reference: str, names: tuple[str, ...]) -> CheckResult:
    """Does ``answer`` state exactly the facts of ``reference`` (the template), within tolerance?"""
    got, want = extract(answer, names), extract(reference, names)
    problems = []
    if got["names"] != want["names"]:
        problems.append(f"names {got['names']} != {want['names']}")
    for kind in ("times", "minutes", "percent", "temp", "watts", "elevation", "steps"):
        a, b = got[kind], want[kind]
        if len(a) != len(b) or not all(_close(kind, x, y) for x, y in zip(a, b)):
            problems.append(f"{kind} {a} != {b}")
    return CheckResult(not problems, tuple(problems))
