"""Questions, answers and the fact checker.

A question is sorted into an intent by keywords (where, eclipse, battery, GPU temperature, pass,
training). For each intent there is a template answer built from the Facts: it is the fallback,
the reference the checker compares a model's answer with, and the target text of the fine-tuning
dialogues (tools/dialogues.py). A model sees ``relevant_context(question, facts)`` (the facts the
question needs, compact) then the question, and writes the answer (``model_prompt``).

The checker pulls every fact out of an answer — region names, clock times ("07:05 UTC"),
durations ("in 20 minutes"), percentages, temperatures, powers, station names, elevations, step
counts, losses, the GPU's and the training job's state words, charging or discharging, being in
eclipse now — and compares them with the template's: a fact the template has must be there and
right (times and durations within a minute), no other fact may appear, and a number it cannot
place as a fact fails the answer. Wording is free; facts are not.
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


def relevant_context(question: str, facts: Facts) -> str:
    """The telemetry a question needs, as the model sees it: the retrieval step of the assistant.

    Only the facts of the question's intent go in, every value already in the words and units an
    answer uses (a small model copies; it need not do arithmetic); for a pass, the pass of the
    station asked about, or the soonest. A small onboard model then has a short
    context to copy its values from, and its answer costs a few hundred characters of attention
    instead of the whole telemetry picture: fast on the GPU it shares with training."""
    intent = classify(question)
    if intent == "where":
        if facts.region is None:
            return "no position fix"
        if facts.next_region is None:
            return f"here {phrase(facts.region)}; no change for two hours"
        return (f"here {phrase(facts.region)}; next {phrase(facts.next_region)} in "
                f"{_minutes(facts.next_region_in_s)} at {_hhmm(facts.next_region_utc)}")
    if intent == "eclipse":
        if facts.in_umbra:
            if facts.eclipse_end_utc is None:
                return "eclipse now"
            return f"eclipse now, sun in {_minutes(facts.eclipse_end_in_s)} at {_hhmm(facts.eclipse_end_utc)}"
        if facts.eclipse_start_utc is None:
            return "no eclipse predicted"
        return (f"eclipse in {_minutes(facts.eclipse_start_in_s)} at {_hhmm(facts.eclipse_start_utc)} "
                f"lasts {_minutes(facts.eclipse_end_in_s - facts.eclipse_start_in_s)}")
    if intent == "battery":
        if facts.battery_soc is None:
            return "no battery telemetry"
        battery = f"battery {100 * facts.battery_soc:.0f}%"
        if facts.battery_energy_wh is not None:
            battery += f" {facts.battery_energy_wh:.0f} Wh of {facts.battery_capacity_wh:.0f} Wh"
        if facts.battery_power_w is not None and abs(facts.battery_power_w) >= 1.0:
            battery += f" {'charging' if facts.battery_power_w > 0 else 'discharging'} {abs(facts.battery_power_w):.0f} W"
        return battery
    if intent == "gpu":
        if facts.gpu_temp_c is None:
            return "no gpu temperature"
        gpu = f"gpu {facts.gpu_state or 'off'} {facts.gpu_temp_c:.1f} °C"
        if facts.gpu_state not in (None, "off") and facts.gpu_power_w is not None:
            gpu += f" {facts.gpu_power_w:.0f} W"
        return gpu
    if intent == "pass":
        station = station_in(question, facts.stations)
        if station is None and _NAMED_PLACE.search(question):
            return f"unknown station; known {', '.join(facts.stations) or 'none'}"
        if station is not None:
            p = facts.passes.get(station)
            if p is None:
                return f"no pass over {station} in 24 hours"
        elif facts.passes:
            p = min(facts.passes.values(), key=lambda p: p.aos_in_s)
        else:
            return "no pass in 24 hours"
        return (f"pass {p.station} in {_minutes(p.aos_in_s)} at {_hhmm(p.aos_utc)} "
                f"{p.max_elevation_deg:.0f}° elevation")
    if intent == "training":
        if facts.training_steps is None:
            return "not training"
        loss = f" loss {facts.training_loss:.2f}" if facts.training_loss is not None else ""
        return f"training step {facts.training_steps}{loss} {facts.training_state or 'idle'}"
    return "help"


def model_prompt(question: str, facts: Facts) -> str:
    return f"[{relevant_context(question, facts)}]\nQ: {question}\nA: "


# --------------------------------------------------------------------------------- the checker

_TIME = re.compile(r"\b(\d{1,2}):(\d{2})\b")
_DURATION = re.compile(r"\b(\d+) minutes?\b|\bless than a minute\b")
_HOURS = re.compile(r"\b(\d+) hours?\b")
_PERCENT = re.compile(r"(-?\d+(?:\.\d+)?)\s*%")
_TEMP = re.compile(r"(-?\d+(?:\.\d+)?)\s*°?\s*C\b")
_WATTS = re.compile(r"(-?\d+(?:\.\d+)?)\s*W(?:h)?\b")
_DEGREES = re.compile(r"(\d+(?:\.\d+)?)\s*°\s*elevation")
_STEP = re.compile(r"\bstep (\d+)\b")
_LOSS = re.compile(r"\bloss (?:of |is |at )?(-?\d+(?:\.\d+)?)\b")
# Words that state a fact: the GPU's and the training job's state, the battery's direction.
_STATE = re.compile(r"\b(off|booting|idle|busy|waiting|preempted|training|charging|discharging)\b")
# Saying the satellite is in the Earth's shadow now (else: a forecast of the next eclipse).
_UMBRA_NOW = re.compile(r"\bin (?:eclipse|the Earth's shadow|the shadow|shadow)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d")

_NUMERIC_KINDS = ("times", "minutes", "hours", "percent", "temp", "watts", "elevation", "steps", "loss")
_TOLERANCE = {"minutes": 1.0, "hours": 0.0, "percent": 1.0, "temp": 0.15, "watts": 1.0, "elevation": 1.0, "steps": 0.0,
              "loss": 0.0051}


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    problems: tuple[str, ...] = ()


def _take(pattern: re.Pattern, text: str, value) -> tuple[list, str]:
    """The values of every match, and the text with the matches blanked out (so that one number
    is read as one fact only, and what is left over can be checked for stray numbers)."""
    values = [value(m) for m in pattern.finditer(text)]
    return values, pattern.sub(lambda m: " " * len(m.group(0)), text)


def extract(answer: str, names: tuple[str, ...]) -> dict[str, list]:
    """Every fact an answer states, by kind. ``stray`` holds any digits left once every kind of
    fact has been read: a number the checker cannot place is a number it cannot vouch for."""
    text = answer
    found_names = []
    for name in sorted(names, key=len, reverse=True):  # "North Atlantic" before "Atlantic"
        if name in text:
            found_names.append(name)
            text = text.replace(name, " ")
    facts: dict[str, list] = {"names": sorted(found_names)}
    facts["times"], text = _take(_TIME, text, lambda m: int(m.group(1)) * 60 + int(m.group(2)))
    facts["minutes"], text = _take(_DURATION, text, lambda m: 0 if m.group(1) is None else int(m.group(1)))
    facts["hours"], text = _take(_HOURS, text, lambda m: int(m.group(1)))
    facts["percent"], text = _take(_PERCENT, text, lambda m: float(m.group(1)))
    facts["elevation"], text = _take(_DEGREES, text, lambda m: float(m.group(1)))
    facts["temp"], text = _take(_TEMP, text, lambda m: float(m.group(1)))
    facts["watts"], text = _take(_WATTS, text, lambda m: float(m.group(1)))
    facts["steps"], text = _take(_STEP, text, lambda m: int(m.group(1)))
    facts["loss"], text = _take(_LOSS, text, lambda m: float(m.group(1)))
    facts["states"] = sorted(m.group(1) for m in _STATE.finditer(text))
    facts["umbra_now"] = [bool(_UMBRA_NOW.search(text))]
    facts["stray"] = _NUMBER.findall(text)
    return facts


def _close(kind: str, a: float, b: float) -> bool:
    if kind == "times":
        diff = abs(a - b) % (24 * 60)
        return min(diff, 24 * 60 - diff) <= TIME_TOLERANCE_S / 60
    return abs(a - b) <= _TOLERANCE[kind]


def check_answer(answer: str, reference: str, names: tuple[str, ...]) -> CheckResult:
    """Does ``answer`` state exactly the facts of ``reference`` (the template), within tolerance?"""
    got, want = extract(answer, names), extract(reference, names)
    problems = []
    for kind in ("names", "states", "umbra_now"):
        if got[kind] != want[kind]:
            problems.append(f"{kind} {got[kind]} != {want[kind]}")
    for kind in _NUMERIC_KINDS:
        a, b = got[kind], want[kind]
        if len(a) != len(b) or not all(_close(kind, x, y) for x, y in zip(a, b)):
            problems.append(f"{kind} {a} != {b}")
    if got["stray"]:
        problems.append(f"numbers that are no fact: {''.join(got['stray'])}")
    return CheckResult(not problems, tuple(problems))
