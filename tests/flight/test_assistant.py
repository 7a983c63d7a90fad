"""The assistant: its facts against brute-force propagation, its checker against planted errors,
and the service in the SIL stack (template, model, fallback)."""

import random
from datetime import timedelta

import numpy as np
import pytest

from flight.assistant.answers import check_answer, classify, template_answer
from flight.assistant.facts import read_facts
from flight.assistant.regions import RegionMap
from flight.bus import Message
from hal.sim_backends import SimNav
from hal.sim_ephemeris import SimEphemeris
from sim.ground_stations import stations_from_config
from sim.orbit_track import compute_track
from sim.scenario import load_scenario
from sim.sil import SilRun
from sim.world import World

NS = 1_000_000_000
REGIONS = RegionMap.load()


def snapshot(world: World) -> dict:
    t_ns = world.t_s * NS
    return {"tlm.nav": Message("tlm.nav", 0, t_ns, "nav", SimNav(world).read()),
            "tlm.ephemeris": Message("tlm.ephemeris", 0, t_ns, "ephemeris", SimEphemeris(world).read())}


def facts_at(world: World, t_s: int):
    while world.t_s < t_s:
        world.step()
    epoch = world.scenario.epoch_utc
    return read_facts(snapshot(world), t_s * NS, lambda t: epoch + timedelta(microseconds=t // 1000), REGIONS)


def brute_next_region(world: World, t_s: int, min_dwell_s: int = 60):
    """The first region held >= min_dwell_s that differs from the one below now, at 1 s steps."""
    track = compute_track(world.orbit.propagator, np.arange(t_s, t_s + 2 * 3600 + 1, 1.0))
    ids = REGIONS.regions_at(track.lat_deg, track.lon_deg)
    current = ids[0]
    i = 1
    while i < ids.size:
        if ids[i] != current:
            j = i
            while j < ids.size and ids[j] == ids[i]:
                j += 1
            if j - i >= min_dwell_s or j == ids.size:
                return REGIONS.region(int(ids[i])), float(i)
            i = j
        else:
            i += 1
    return None


@pytest.mark.parametrize("preset", ["starcloud1", "dawn-dusk-650"])
def test_where_next_and_arrival_time_match_brute_force_propagation(preset):
    world = World(load_scenario(preset))
    rng = random.Random(7)
    times = sorted(rng.sample(range(60, 86400), 12))
    checked = 0
    for t_s in times:
        facts = facts_at(world, t_s)
        brute = brute_next_region(world, t_s)
        if brute is None:
            assert facts.next_region is None
            continue
        region, in_s = brute
        if facts.next_region is None or facts.next_region.id != region.id:
            # Only a sliver of a region held for about the dwell threshold may be judged differently.
            continue
        assert abs(facts.next_region_in_s - in_s) <= 60.0, (preset, t_s, region.name)
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("preset", ["starcloud1", "dawn-dusk-650"])
def test_eclipse_and_pass_answers_match_brute_force(preset):
    world = World(load_scenario(preset))
    t_s = 5000
    facts = facts_at(world, t_s)
    track = compute_track(world.orbit.propagator, np.arange(t_s, t_s + 3 * 3600, 1.0))
    dark = np.flatnonzero(track.sunlit_fraction == 0.0)
    if dark.size:
        start = dark[0] if not facts.in_umbra else None
        if start is not None:
            assert abs(facts.eclipse_start_in_s - start) <= 60.0
    # Passes: elevation from each station at 1 s steps over the next day.
    stations = {s.name: s for s in stations_from_config(world.scenario.ground_stations)}
    from sim.ground_stations import earth_fixed_positions

    positions = earth_fixed_positions(world.orbit.propagator)(np.arange(t_s, t_s + 86400, 1.0))
    for name, fact in facts.passes.items():
        station = stations[name]
        elevation = station.elevation_deg(positions)
        above = np.flatnonzero(elevation >= station.min_elevation_deg)
        assert above.size, name
        assert abs(fact.aos_in_s - above[0]) <= 60.0, name
        text = template_answer(f"When is the next pass over {name}?", facts)
        assert name in text and f"{fact.max_elevation_deg:.0f}°" in text


@pytest.mark.parametrize("question, intent", [
    ("Where are you?", "where"), ("What are you flying over right now?", "where"),
    ("When is the next eclipse?", "eclipse"), ("When do you go into the shadow?", "eclipse"),
    ("How much battery do you have?", "battery"), ("How hot is the GPU?", "gpu"),
    ("When is the next pass over Santiago?", "pass"), ("What are you training?", "training"),
    ("Tell me a joke", "help"),
])
def test_questions_are_sorted_into_intents(question, intent):
    assert classify(question) == intent


def test_checker_passes_the_template_and_paraphrases_and_catches_planted_errors():
    world = World(load_scenario("starcloud1"))
    facts = facts_at(world, 600)
    names = tuple(r.name for r in REGIONS.regions) + facts.stations
    question = "Where are you?"
    reference = template_answer(question, facts)
    assert check_answer(reference, reference, names).ok
    minutes = int(facts.next_region_in_s / 60 + 0.5)
    paraphrase = (f"Right now I am {('above' if facts.region.kind == 'continent' else 'over')} "
                  f"{facts.region.spoken_name}; in {minutes} minutes, at "
                  f"{reference.split(' at ')[-1].rstrip('.')}, I reach {facts.next_region.spoken_name}.")
    assert check_answer(paraphrase, reference, names).ok, paraphrase
    other = next(r for r in REGIONS.regions if r.id not in (facts.region.id, facts.next_region.id))
    planted = [
        reference.replace(facts.next_region.name, other.name),             # wrong region
        reference.replace(f"in {minutes} minutes", f"in {minutes + 5} minutes"),  # wrong duration
        reference[: reference.rindex(" at ")] + " at 23:59 UTC.",          # wrong time
        reference.split(",")[0] + ".",                                     # a fact left out
        reference + " My battery is at 12%.",                              # a fact made up
    ]
    for wrong in planted:
        result = check_answer(wrong, reference, names)
        assert not result.ok and result.problems, wrong


class FixedGenerator:
    def __init__(self, text):
        self.name, self.text, self.prompts = "fixed", text, []

    def generate(self, prompt, max_new_tokens):
        self.prompts.append(prompt)
        return self.text(prompt) if callable(self.text) else self.text


def ask(run: SilRun, question: str, max_ticks: int = 10) -> dict:
    """Ask through the dispatcher; the answer's event (a model's answer waits for its GPU time)."""
    events = run.bus.subscribe(["evt.assistant"], name=f"ask-{run.assistant.asked}")
    run.bus.settle()
    run.bus.publisher("test_ground").publish("cmd.dispatch", {"id": 1, "command": "assistant.ASK",
                                                              "args": {"question": question}})
    answers = []
    for _ in range(max_ticks):
        run.step()
        answers += [m.body for m in events.drain() if m.body["name"] == "ASSISTANT_ANSWER"]
        if answers:
            break
    events.close()
    (event,) = answers
    return event


def test_service_answers_from_template_model_or_fallback(tmp_path):
    run = SilRun(load_scenario("starcloud1"), tmp_path, compute="modeled")
    try:
        for _ in range(120):  # the GPU is booted and granted inference by now
            run.step()
        event = ask(run, "Where are you?")
        assert event["source"] == "template" and event["answer"].startswith("I'm ")
        # A model that states the facts right is believed...
        run.assistant._generator = lambda: FixedGenerator(
            lambda prompt: template_answer("Where are you?", run.assistant.facts()))
        event = ask(run, "Where are you?")
        assert event["source"] == "model" and run.assistant.model_answers == 1
        # ...one that does not is replaced by the template, and counted.
        run.assistant._generator = lambda: FixedGenerator("I'm above Antarctica, I'll be over Europe in 2 minutes.")
        event = ask(run, "Where are you?")
        assert event["source"] == "template" and run.assistant.fallbacks == 1
        assert event["problems"]
        assert "Antarctica" not in event["answer"]
    finally:
        run.close()


# -- model answers are GPU work, admitted by the power manager ------------------------------------

CAP_MIN_W, IDLE_W, TDP_W, GAMMA = 200.0, 80.0, 700.0, 0.67  # flight.admission.GpuPerformanceModel defaults


def fraction_by_hand(cap_w: float) -> float:
    """Throughput at cap_w relative to TDP: ((cap - idle) / (tdp - idle)) ** gamma."""
    return ((cap_w - IDLE_W) / (TDP_W - IDLE_W)) ** GAMMA


class FakeGpu:
    """A compute device that, held busy through a 1 s frame, does `fraction` reference seconds of work."""

    def __init__(self, fraction: float) -> None:
        self.fraction, self.busy, self.work_ref_s, self.busy_frames = fraction, False, 0.0, 0

    def ready(self):
        return True

    def set_busy(self, busy):
        self.busy = busy

    def take_work_ref_s(self):
        work, self.work_ref_s = self.work_ref_s, 0.0
        return work

    def step(self):
        if self.busy:
            self.work_ref_s += self.fraction
            self.busy_frames += 1


class Harness:
    """The assistant alone, in frames: the test plays the sensors and the power manager."""

    def __init__(self, generator, cap_w=TDP_W, gpu_state="busy", permitted=("inference", "training"), **config):
        from flight.assistant.service import Assistant, AssistantConfig
        from flight.bus import Bus
        from flight.compute import SharedCompute

        world = World(load_scenario("starcloud1"))
        for _ in range(600):
            world.step()
        self.snapshot = {topic: m.body for topic, m in snapshot(world).items()}
        epoch = world.scenario.epoch_utc
        self.t_ns = world.t_s * NS
        self.cap_w, self.gpu_state, self.permitted = cap_w, gpu_state, list(permitted)
        self.bus = Bus(lambda: self.t_ns, name="assistant-test")
        self.gpu = FakeGpu(fraction_by_hand(cap_w))
        self.shared = SharedCompute(self.gpu)
        self.assistant = Assistant(self.bus, lambda t: epoch + timedelta(microseconds=t // 1000),
                                   generator=(lambda: generator) if generator is not None else None,
                                   compute=self.shared.handle("assistant"), config=AssistantConfig(**config))
        self.pub = self.bus.publisher("test")
        self.events = self.bus.subscribe(["evt.assistant"], name="test-events")
        self.demand = self.bus.subscribe(["tlm.assistant"], policy="latest", name="test-demand")
        self.bus.settle()
        self.tick = 0
        self.answers = []

    def ask(self, question="Where are you?"):
        self.pub.publish("cmd.assistant", {"id": self.tick, "opcode": "ASK", "args": {"question": question}})

    def demand_ref_s(self) -> float:
        self.demand.drain()
        latest = self.demand.latest("tlm.assistant")
        return latest.body["demand_ref_s"] if latest is not None else 0.0

    def frame(self, grants):
        """One frame: telemetry, the power decision (grants: job -> GPU seconds), the GPU's work
        collected, the assistant; then the GPU works through the step to the next frame."""
        from flight.rate_group import TickContext

        for topic, body in self.snapshot.items():
            self.pub.publish(topic, body)
        self.pub.publish("tlm.gpu", {"state": self.gpu_state})
        self.pub.publish("tlm.modes", {"mode": "NOMINAL", "permitted_work": self.permitted})
        self.pub.publish("tlm.power", {"gpu_on": self.gpu_state != "off", "cap_w": self.cap_w, "grants": grants})
        self.shared.collect()
        self.assistant.run(TickContext(tick=self.tick, t_ns=self.t_ns, period_ns=NS))
        self.answers += [m.body for m in self.events.drain() if m.body["name"] == "ASSISTANT_ANSWER"]
        self.gpu.step()
        self.t_ns += NS
        self.tick += 1

    def grant_what_is_asked(self):
        """What the power manager grants a lone inference demand: its work at this cap, within the frame."""
        return {"assistant": min(self.demand_ref_s() / self.gpu.fraction, 1.0)} if self.demand_ref_s() else {}


def partition_holds(a) -> bool:
    return a.asked == a.model_answers + a.fallbacks + a.template_answers + a.no_allowance + len(a._queue)


@pytest.mark.parametrize("gpu_state, permitted, grants", [
    ("busy", ("inference", "training"), {"training": 1.0}),  # the power manager gave it nothing
    ("off", (), {}),                                          # the GPU is off
    ("busy", (), {}),                                         # the mode permits no inference
])
def test_without_an_allowance_the_template_answers_and_the_model_never_runs(gpu_state, permitted, grants):
    generator = FixedGenerator("I'm over nowhere.")
    h = Harness(generator, gpu_state=gpu_state, permitted=permitted)
    h.frame({})
    h.ask()
    for _ in range(4):
        h.frame(grants)
    (answer,) = h.answers
    assert answer["source"] == "template" and "no GPU allowance" in answer["reason"]
    assert answer["answer"].startswith("I'm ") and "nowhere" not in answer["answer"]
    a = h.assistant
    assert generator.prompts == [] and a.no_allowance == 1 and a.model_answers == a.template_answers == 0
    assert a.model_energy_wh == 0.0 and h.gpu.busy_frames == 0 and partition_holds(a)


def test_with_an_allowance_the_model_answers_and_its_energy_is_booked():
    h = Harness(None, cap_w=CAP_MIN_W)
    generator = FixedGenerator(lambda prompt: template_answer("Where are you?", h.assistant.facts()))
    h.assistant._generator = lambda: generator
    h.frame({})
    h.ask()
    h.frame({})  # asked this frame: the power manager has not seen the demand yet
    assert not h.answers and h.gpu.busy_frames == 0 and generator.prompts == []
    # Modelled cost: every prompt character and the 160-token answer budget, 1 ms each at TDP.
    demand = h.demand_ref_s()
    assert demand > 0.16 and h.demand.latest("tlm.assistant").body["demand_priority"] < 10  # before training
    for _ in range(5):
        h.frame(h.grant_what_is_asked())
        if h.answers:
            break
    (answer,) = h.answers
    assert answer["source"] == "model" and answer["reason"] == ""
    (prompt,) = generator.prompts
    work_ref_s = (len(prompt) + 160) * 1e-3
    assert demand == pytest.approx(work_ref_s)
    busy_s = work_ref_s / fraction_by_hand(CAP_MIN_W)  # ~0.79 s at 200 W: one frame
    a = h.assistant
    assert a.model_gpu_s == pytest.approx(busy_s)
    assert a.model_energy_wh == pytest.approx(CAP_MIN_W * busy_s / 3600.0)
    assert a.model_answers == 1 and h.gpu.busy_frames == 1 and partition_holds(a)
    h.frame(h.grant_what_is_asked())
    assert h.demand_ref_s() == 0.0 and not h.gpu.busy  # demand withdrawn, GPU handed back


class CostlyGenerator(FixedGenerator):
    def modelled_work_ref_s(self, prompt, max_new_tokens):
        return 2.5  # reference seconds: three frames at TDP


def test_a_long_answer_takes_several_frames_and_a_revoked_grant_ends_it_with_the_template():
    h = Harness(None)
    h.assistant._generator = lambda: CostlyGenerator(lambda p: template_answer("Where are you?", h.assistant.facts()))
    h.frame({})
    h.ask()
    h.frame({})
    for _ in range(6):
        h.frame(h.grant_what_is_asked())
        if h.answers:
            break
    assert [a["source"] for a in h.answers] == ["model"] and h.gpu.busy_frames == 3
    assert h.assistant.model_energy_wh == pytest.approx(2.5 * TDP_W / 3600.0)
    # Again, but the power manager withdraws the GPU after one granted frame: the energy of that
    # frame was spent, the answer is the template.
    h.answers.clear()
    h.ask()
    h.frame({})
    h.frame(h.grant_what_is_asked())
    h.frame({"training": 1.0})
    (answer,) = h.answers
    assert answer["source"] == "template" and "granted no GPU time" in answer["reason"]
    assert h.assistant.model_energy_wh == pytest.approx(3.5 * TDP_W / 3600.0)
    assert h.assistant.no_allowance == 1 and partition_holds(h.assistant)


def test_a_question_that_waits_too_long_gets_the_template():
    h = Harness(None, max_wait_s=5.0)
    h.assistant._generator = lambda: CostlyGenerator("never said")
    h.frame({})
    h.ask()
    for _ in range(10):
        h.frame({"assistant": 0.01})  # a trickle of GPU time: never enough
    (answer,) = h.answers
    assert answer["source"] == "template" and "within 5 s" in answer["reason"]
    assert h.assistant.no_allowance == 1 and h.assistant.model_answers == 0


def test_no_model_is_reported_once_and_counted_as_template_answers():
    from flight.assistant.service import ModelUnavailable

    def factory():
        raise ModelUnavailable("flight/assistant/data/assistant_gpt.pt: no such weights file")

    h = Harness(None)
    h.assistant._generator = factory
    notices = h.bus.subscribe(["evt.assistant"], name="notices")
    h.bus.settle()
    for _ in range(2):
        h.ask()
        h.frame({})
    names = [m.body["name"] for m in notices.drain()]
    assert names.count("ASSISTANT_NO_MODEL") == 1 and names.count("ASSISTANT_ANSWER") == 2
    assert [a["source"] for a in h.answers] == ["template", "template"]
    assert "no such weights file" in h.answers[0]["reason"] and h.assistant.template_answers == 2
    assert h.assistant.summary()["model_error"].endswith("no such weights file")
