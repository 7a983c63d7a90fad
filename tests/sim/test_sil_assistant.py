"""The assistant's language model wired into the SIL: which model a choice means, the model loaded
at the first question (or its absence reported once), its answers admitted by the power manager
ahead of training and their energy booked, and runs nobody asks anything left as they were."""

import pytest
import torch

from flight.assistant.model import CheckpointAssistantModel, default_weights_path
from flight.training.finetune import assistant_model_from_state
from sim.scenario import load_scenario
from sim.sil import AssistantModelChoiceError, AssistantModelLoader, SilRun, assistant_model_source
from sim.world import gpu_params
from tests.conftest import scenario_with
QUESTION = "Where are you?"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny_weights(tiny_assistant_weights):
    """A weights file in the shipped format: a tiny, untrained GPT over the assistant's vocabulary."""
    return tiny_assistant_weights


@pytest.mark.parametrize("choice, compute, kind", [
    ("none", "real", None), ("none", "modeled", None),
    ("auto", "modeled", None),        # fast sims keep templates
    ("auto", "real", "onboard"), ("onboard", "modeled", "onboard"),
])
def test_choices_name_a_model_or_templates(choice, compute, kind):
    source = assistant_model_source(choice, compute)
    assert (source.kind if source is not None else None) == kind
    if source is not None:
        assert source.path is None  # the shipped weights


def test_a_path_is_a_weights_file_or_a_model_directory_and_anything_else_is_refused(tmp_path, tiny_weights):
    assert assistant_model_source(tiny_weights, "modeled").kind == "onboard"
    assert assistant_model_source(str(tmp_path), "modeled").kind == "hf"
    with pytest.raises(AssistantModelChoiceError, match="'gemma'"):
        assistant_model_source("gemma", "real")
    with pytest.raises(AssistantModelChoiceError):
        SilRun(load_scenario("starcloud1"), tmp_path / "run", compute="modeled", assistant_model=tmp_path / "no.pt")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def ask_and_watch(run: SilRun, question: str = QUESTION, max_ticks: int = 10):
    """Ask through the dispatcher; (answer event, other assistant events, tlm.power and tlm.assistant
    bodies of the ticks up to the answer)."""
    watch = run.bus.subscribe(["evt.assistant", "tlm.power", "tlm.assistant"], hwm=100_000,
                              name=f"watch-{run.assistant.asked}")
    run.bus.settle()
    run.bus.publisher("test_ground").publish("cmd.dispatch", {"id": 1, "command": "assistant.ASK",
                                                              "args": {"question": question}})
    seen = []
    for _ in range(max_ticks):
        run.step()
        seen += watch.drain()
        if any(m.body.get("name") == "ASSISTANT_ANSWER" for m in seen):
            break
    watch.close()
    (answer,) = [m.body for m in seen if m.body.get("name") == "ASSISTANT_ANSWER"]
    notices = [m.body for m in seen if m.topic == "evt.assistant" and m.body["name"] != "ASSISTANT_ANSWER"]
    return (answer, notices, [m.body for m in seen if m.topic == "tlm.power"],
            [m.body for m in seen if m.topic == "tlm.assistant"])


def test_the_model_answers_on_gpu_time_granted_before_training_and_its_energy_is_booked(tmp_path, tiny_weights):
    scenario = load_scenario("starcloud1")
    run = SilRun(scenario, tmp_path, compute="modeled", assistant_model=tiny_weights)
    try:
        for _ in range(120):  # the GPU is booted and training by now
            run.step()
        answer, notices, powers, demands = ask_and_watch(run)
        assert [n["name"] for n in notices] == ["ASSISTANT_MODEL"] and notices[0]["model"] == "onboard-gpt"
        # An untrained model cannot state the facts: the checker sends the template instead.
        assert answer["source"] == "template" and "disagreed" in answer["reason"] and answer["problems"]
        assert run.assistant.fallbacks == 1 and run.assistant.model_answers == 0
        # Its cost: the prompt's characters, cropped to the 64-character block, and the 160-token
        # budget, at 1 ms each at TDP.
        demand = max(d["demand_ref_s"] for d in demands)
        assert demand == pytest.approx((64 + 160) * 1e-3)
        assert all(d["demand_kind"] == "inference" for d in demands)
        granted = [p for p in powers if "assistant" in p["grants"]]
        assert granted, powers
        first = granted[0]
        gpu = gpu_params(scenario)
        fraction = ((first["cap_w"] - gpu.idle_power_w) / (gpu.tdp_w - gpu.idle_power_w)) ** gpu.throughput_exponent
        grant_s = first["grants"]["assistant"]
        assert grant_s == pytest.approx(demand / fraction)  # admitted whole, ahead of training...
        assert first["grants"]["training"] == pytest.approx(1.0 - grant_s)  # ...which gets the rest of the frame
        summary = run.finish()["assistant"]
        assert summary["model"] == "onboard-gpt" and summary["model_choice"] == str(tiny_weights)
        assert summary["model_gpu_s"] == pytest.approx(grant_s)
        assert summary["model_energy_wh"] == pytest.approx(first["cap_w"] * grant_s / 3600.0)
    finally:
        run.close()


def test_a_corrupt_weights_file_is_reported_once_and_templates_answer(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file at all")
    run = SilRun(load_scenario("starcloud1"), tmp_path / "run", compute="modeled", assistant_model=bad)
    try:
        for _ in range(60):
            run.step()
        first, notices, _, _ = ask_and_watch(run)
        second, more, _, _ = ask_and_watch(run, "How much battery do you have?")
        assert [n["name"] for n in notices + more] == ["ASSISTANT_NO_MODEL"]
        assert "not a readable torch file" in notices[0]["reason"]
        assert first["source"] == second["source"] == "template" and "no language model" in first["reason"]
        summary = run.finish()["assistant"]
        assert summary["model"] is None and "not a readable torch file" in summary["model_error"]
        assert summary["template_answers"] == 2 and summary["model_energy_wh"] == 0.0
    finally:
        run.close()


@pytest.mark.skipif(default_weights_path().exists(), reason="the shipped weights are there")
def test_without_the_shipped_weights_the_reason_is_given(tmp_path):
    loader = AssistantModelLoader("onboard")
    with pytest.raises(Exception, match="no such weights file"):
        loader()
    assert "no such weights file" in loader.error


def test_a_hugging_face_directory_answers_through_the_same_admission(tmp_path):
    from tests.flight.test_backends import build_tiny_hf_model

    directory = build_tiny_hf_model(tmp_path / "tiny-llama")
    run = SilRun(load_scenario("starcloud1"), tmp_path / "run", compute="modeled", assistant_model=directory)
    try:
        for _ in range(120):
            run.step()
        answer, notices, powers, _ = ask_and_watch(run)
        assert notices[0]["name"] == "ASSISTANT_MODEL" and notices[0]["model"] == "hf:tiny-llama"
        assert answer["source"] == "template" and "disagreed" in answer["reason"]  # an untrained model
        assert any("assistant" in p["grants"] for p in powers) and run.assistant.model_energy_wh > 0.0
    finally:
        run.close()


def test_a_model_changes_no_telemetry_until_someone_asks(tmp_path, tiny_weights):
    hashes = {}
    for choice in ("none", str(tiny_weights)):
        run = SilRun(load_scenario("starcloud1"), tmp_path / f"run-{len(hashes)}", compute="modeled",
                     assistant_model=choice)
        try:
            run.run(200)
            summary = run.finish()
        finally:
            run.close()
        hashes[choice] = summary["telemetry_sha256"]
        assert summary["assistant"]["model"] is None and summary["assistant"]["asked"] == 0  # never loaded
    assert len(set(hashes.values())) == 1


def test_the_assistant_speaks_with_what_the_training_job_fine_tuned_on_board(tmp_path, tiny_weights, tiny_dialogues):
    scenario = scenario_with("starcloud1", training={"task": "assistant", "dialogues": str(tiny_dialogues),
                                                     "num_threads": 1})
    run = SilRun(scenario, tmp_path / "run", compute="real", assistant_model=tiny_weights)
    try:
        run.run(900)  # training from the GPU's first boot; a checkpoint 60 s before the eclipse at ~896 s
        state, info = run.checkpoints.load_latest()
        assert state["task"] == "assistant" and info.step > 0
        answer, notices, _, _ = ask_and_watch(run)
        (notice,) = notices
        assert notice["name"] == "ASSISTANT_MODEL"
        assert notice["model"] == f"assistant-gpt fine-tuned on board, step {info.step}"
        # The assistant's weights are the checkpoint's, not the base file's.
        model, _ = assistant_model_from_state(state)
        spoken = run.assistant_source.generator.model.state_dict()
        assert all(torch.equal(spoken[name], tensor) for name, tensor in model.state_dict().items())
        assert answer["source"] in ("model", "template")  # a tiny model: the checker may correct it
        summary = run.finish()
        assert summary["training_task"] == "assistant"
        assert summary["assistant"]["model"] == notice["model"]
    finally:
        run.close()


def test_a_checkpoint_directory_is_an_assistant_model_choice(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "ckpt-000000000001.ckpt").write_bytes(b"corrupt")
    source = assistant_model_source(folder, "modeled")
    assert isinstance(source, CheckpointAssistantModel)
    with pytest.raises(Exception, match="no verified checkpoint of the assistant fine-tuning task"):
        source()
