"""The assistant's retrieval step: the model sees only the facts its question needs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from flight.assistant.answers import extract, model_prompt, relevant_context, template_answer
from flight.assistant.facts import Facts, PassFact

NOW = datetime(2026, 11, 25, 6, 0, 0, tzinfo=timezone.utc)


def _pass(station: str, in_s: float, elevation_deg: float) -> PassFact:
    aos = NOW + timedelta(seconds=in_s)
    return PassFact(station, aos, in_s, aos + timedelta(minutes=6), elevation_deg)


FACTS = Facts(
    utc=NOW, in_umbra=False, eclipse_start_in_s=1200.0, eclipse_start_utc=NOW + timedelta(seconds=1200),
    eclipse_end_in_s=3000.0, eclipse_end_utc=NOW + timedelta(seconds=3000),
    battery_soc=0.76, battery_energy_wh=456.0, battery_capacity_wh=600.0, battery_power_w=-212.4,
    gpu_state="busy", gpu_temp_c=61.26, gpu_power_w=512.0, training_state="training", training_steps=1234,
    training_loss=1.875,
    passes={"Wallops": _pass("Wallops", 4000.0, 41.0), "Santiago": _pass("Santiago", 600.0, 12.0)},
    stations=("Wallops", "Santiago", "Hartebeesthoek"),
)


def test_a_named_station_gets_its_own_pass_and_only_it():
    assert relevant_context("When is the next pass over Wallops?", FACTS) == \
        "pass Wallops in 67 minutes at 07:07 UTC 41° elevation"  # 4000 s = 66.7 min; 06:00 + 66.7 min
    assert relevant_context("next pass over wallops?", FACTS).startswith("pass Wallops ")


def test_no_station_named_gets_the_soonest_pass():
    assert relevant_context("When is the next pass?", FACTS) == "pass Santiago in 10 minutes at 06:10 UTC 12° elevation"


def test_a_known_station_without_a_pass_and_an_unknown_station():
    assert relevant_context("Next pass over Hartebeesthoek?", FACTS) == "no pass over Hartebeesthoek in 24 hours"
    assert relevant_context("When is the next pass over Kiruna?", FACTS) == \
        "unknown station; known Wallops, Santiago, Hartebeesthoek"


@pytest.mark.parametrize("question, expected", [
    ("How much battery do you have?", "battery 76% 456 Wh of 600 Wh discharging 212 W"),
    ("How hot is the GPU?", "gpu busy 61.3 °C 512 W"),
    ("What are you training?", "training step 1234 loss 1.88 training"),
    ("When is the next eclipse?", "eclipse in 20 minutes at 06:20 UTC lasts 30 minutes"),
    ("Hello", "help"),
])
def test_each_intent_sees_its_own_facts(question, expected):
    assert relevant_context(question, FACTS) == expected


@pytest.mark.parametrize("question", [
    "How much battery do you have?", "How hot is the GPU?", "What are you training?", "When is the next eclipse?",
    "When is the next pass?", "When is the next pass over Wallops?", "When is the next pass over Kiruna?",
])
def test_every_fact_of_the_template_is_in_the_prompt_and_no_other_intent_is(question):
    names = FACTS.stations
    prompt = model_prompt(question, FACTS)
    context = prompt[1:prompt.index("]\nQ: ")]
    for name in extract(template_answer(question, FACTS), names)["names"]:
        assert name in context
    for foreign in ("battery", "gpu", "training", "eclipse", "pass"):
        if not context.startswith(foreign) and not (foreign == "pass" and "station" in context):
            assert foreign not in context, (foreign, context)


def test_no_facts_yet_says_so():
    empty = Facts(utc=NOW)
    assert relevant_context("Where are you?", empty) == "no position fix"
    assert relevant_context("How much battery do you have?", empty) == "no battery telemetry"
    assert relevant_context("When is the next pass?", empty) == "no pass in 24 hours"


# -------------------------------------------------------------------------------- the checker's new kinds


@pytest.mark.parametrize("question, wrong", [
    # A loss the model garbled ("1.acting"), a wrong loss, a wrong state word.
    ("What are you training?", "I'm training a small character-level GPT on board: step 1234, loss 1.acting."),
    ("What are you training?", "I'm training a small character-level GPT on board: step 1234, loss 1.79, training."),
    ("What are you training?", "I'm training a small character-level GPT on board: step 1234, loss 1.88, waiting."),
    # The battery's direction, the GPU's state.
    ("How much battery do you have?", "My battery is at 76% (456 Wh of 600 Wh), charging at 212 W."),
    ("How hot is the GPU?", "My GPU is idle at 61.3 °C, drawing 512 W."),
    # A number the checker cannot place as a fact.
    ("How hot is the GPU?", "My GPU is busy at 61.3 °C, drawing 512 W, 3 fans."),
])
def test_the_checker_catches_wrong_states_losses_and_stray_numbers(question, wrong):
    from flight.assistant.answers import check_answer

    reference = template_answer(question, FACTS)
    assert check_answer(reference, reference, FACTS.stations).ok
    assert not check_answer(wrong, reference, FACTS.stations).ok, wrong


def test_the_checker_tells_being_in_eclipse_from_a_forecast():
    from dataclasses import replace

    from flight.assistant.answers import check_answer

    in_umbra = replace(FACTS, in_umbra=True, eclipse_end_in_s=600.0, eclipse_end_utc=NOW + timedelta(seconds=600))
    reference = template_answer("When is the next eclipse?", in_umbra)
    assert reference == "I'm in eclipse now; the Sun comes back in 10 minutes, at 06:10 UTC."
    assert check_answer("I'm in the Earth's shadow; sunlight returns in 10 minutes, at 06:10 UTC.", reference, ()).ok
    assert not check_answer("The next eclipse ends in 10 minutes, at 06:10 UTC.", reference, ()).ok
