"""The training job: steps follow the GPU's work, checkpoints precede power loss, and a job that
loses its GPU and resumes from a checkpoint ends bit-identical to one that never stopped."""

import dataclasses

import pytest

from flight.bus import Bus
from flight.checkpoint import CheckpointStore
from flight.rate_group import TickContext
from flight.training.corpus import load_default_corpus
from flight.training.dataset import DatasetError, prepare
from flight.assistant.model import load_weights
from flight.training.finetune import DialogueTrainerConfig
from flight.training.trainer import TrainerConfig
from flight.training_job import TrainingJob, TrainingJobConfig, TrainingTaskError
from sim.scenario import ScenarioError
from sim.sil import training_job_config
from tests.conftest import scenario_with

STEP_COST_S = 2.0
TINY = TrainerConfig(seed=5, batch_size=4, block_size=16, n_layer=1, n_head=2, n_embd=16, num_threads=1)


class FakeGpu:
    """Does exactly one step's work per frame while busy and powered."""

    def __init__(self, log=None):
        self.powered = True
        self.busy = False
        self.frames_busy = 0
        self.log = log if log is not None else []

    def ready(self):
        return self.powered

    def set_busy(self, busy):
        self.busy = busy and self.powered
        self.log.append(("set_busy", self.busy))

    def take_work_ref_s(self):
        work = STEP_COST_S if self.busy and self.powered else 0.0
        self.busy = self.busy and self.powered
        return work


@pytest.fixture(autouse=True)
def close_buses():
    """Every rig's bus is closed after the test: an unclosed ZeroMQ context blocks at exit."""
    yield
    while Rig.open:
        Rig.open.pop().bus.close()


class Rig:
    open: list["Rig"] = []

    def __init__(self, tmp_path, name, compute="real", lead_s=60.0, store=None, **overrides):
        Rig.open.append(self)
        self.t_s = 0
        self.bus = Bus(lambda: self.t_s * 10**9, name=name)
        self.ground = self.bus.publisher("test")
        self.log = []
        self.gpu = FakeGpu(self.log)
        self.store = store if store is not None else CheckpointStore(tmp_path / name)
        settings = dict(compute=compute, step_time_s_at_tdp=STEP_COST_S, checkpoint_interval="fixed",
                        checkpoint_interval_steps=1000, checkpoint_lead_s=lead_s, eval_interval_steps=1000,
                        trainer=TINY)
        config = TrainingJobConfig(**{**settings, **overrides})
        self.job = TrainingJob(self.bus, self.gpu, self.store, config)
        self.events = self.bus.subscribe(["evt.training"], name="events")
        self.telemetry = self.bus.subscribe(["tlm.training"], name="telemetry")
        self.bus.settle()

    def frame(self, allowed=True, umbra_in_s=None, saa_in_s=None, in_saa=False):
        self.ground.publish("tlm.power", {"grants": {"training": 1.0} if allowed else {}})
        self.ground.publish("tlm.nav", {"in_umbra": False, "umbra_start_in_s": umbra_in_s,
                                        "in_saa": in_saa, "saa_start_in_s": 0.0 if in_saa else saa_in_s})
        self.job.run(TickContext(tick=self.t_s, t_ns=self.t_s * 10**9, period_ns=10**9))
        self.t_s += 1

    def event_names(self):
        return [m.body["name"] for m in self.events.drain()]

    def saved_steps(self):
        return [m.body["step"] for m in self.events.drain() if m.body["name"] == "CHECKPOINT_SAVED"]

    def last_telemetry(self):
        return self.telemetry.drain()[-1].body


def test_steps_follow_the_work_the_gpu_reports(tmp_path):
    rig = Rig(tmp_path, "work")
    for _ in range(11):
        rig.frame()
    # Frame 0 restores (nothing to restore: starts from the seed) and sets the GPU busy; each
    # later frame collects one step's work.
    assert rig.job.steps_done == 10
    assert rig.job.last_loss is not None


def test_power_loss_and_resume_is_bit_identical_to_uninterrupted(tmp_path):
    straight = Rig(tmp_path, "straight")
    for _ in range(25):
        straight.frame()
    assert straight.job.steps_done == 24

    broken = Rig(tmp_path, "broken")
    for _ in range(11):
        broken.frame()
    broken.frame(allowed=False)  # the power manager withdraws the grant: checkpoint at step 10
    assert broken.event_names().count("CHECKPOINT_SAVED") == 1
    broken.gpu.powered = False  # the GPU is switched off: device memory is gone
    for _ in range(5):
        broken.frame(allowed=False)
    assert not broken.job.resident
    broken.gpu.powered = True
    while broken.job.steps_done < 24:
        broken.frame()
    assert broken.job.resumes == 1
    assert "TRAINING_RESUMED" in broken.event_names()
    assert broken.job.weights_sha256() == straight.job.weights_sha256()


def test_work_since_the_last_checkpoint_is_lost_on_sudden_power_loss(tmp_path):
    rig = Rig(tmp_path, "sudden")
    for _ in range(6):
        rig.frame()
    rig.frame(allowed=False)  # checkpoint at step 6 (frame 6 collected the sixth step)
    for _ in range(4):
        rig.frame()
    assert rig.job.steps_done == 9
    rig.gpu.powered = False  # no warning this time
    rig.frame(allowed=False)
    names = rig.event_names()
    assert "GPU_STATE_LOST" in names
    rig.gpu.powered = True
    rig.frame()
    assert rig.job.steps_done == 6  # back to the checkpoint


def test_checkpoint_once_ahead_of_each_predicted_eclipse(tmp_path):
    rig = Rig(tmp_path, "eclipse", compute="modeled", lead_s=60.0)
    for _ in range(5):
        rig.frame(umbra_in_s=500.0)
    assert rig.job.checkpoints_saved == 0
    for i in range(10):
        rig.frame(umbra_in_s=59.0 - i)  # the same eclipse, seen for ten frames inside the lead
    assert rig.job.checkpoints_saved == 1
    for i in range(10):
        rig.frame(umbra_in_s=4000.0 - i)  # the next eclipse, still far away
    assert rig.job.checkpoints_saved == 1
    rig.frame(umbra_in_s=30.0 + 4000.0)  # irrelevant: beyond the lead
    rig.t_s += 3900
    rig.frame(umbra_in_s=40.0)  # the next eclipse, now inside the lead
    assert rig.job.checkpoints_saved == 2


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path):
    rig = Rig(tmp_path, "corrupt")
    for _ in range(4):
        rig.frame()
    rig.frame(allowed=False)  # checkpoint at step 4
    rig.frame()
    for _ in range(3):
        rig.frame()
    rig.frame(allowed=False)  # checkpoint at step 7
    newest = rig.store.list_checkpoints()[-1]
    blob = bytearray(newest.read_bytes())
    blob[-10] ^= 0xFF
    newest.write_bytes(bytes(blob))
    rig.gpu.powered = False
    rig.frame(allowed=False)
    rig.gpu.powered = True
    rig.frame()
    assert rig.job.steps_done == 4
    names = rig.event_names()
    assert "CHECKPOINT_REJECTED" in names and "TRAINING_RESUMED" in names


def test_compute_mode_is_validated():
    with pytest.raises(ValueError, match="compute must be one of"):
        TrainingJobConfig(compute="quantum")


# --- the checkpoint interval (Young/Daly) ---------------------------------------------------------

# M = 86400 / 864 = 100 s. The fake GPU does one 2-reference-second step per 1-second frame, so the
# measured step time is 1 s. Daly, C = 2 s: sqrt(400) * (1 + sqrt(0.01)/3 + 0.01/9) - 2
# = 20 * 1.0344444 - 2 = 18.689 s -> 18 steps.
YOUNG_DALY = dict(checkpoint_interval="young_daly", checkpoint_cost_s=2.0, interruptions_per_day=864.0,
                  saa_interruption_factor=4.0)


def test_young_daly_interval_in_steps_from_the_measured_step_time(tmp_path):
    rig = Rig(tmp_path, "yd", compute="modeled", **YOUNG_DALY)
    for _ in range(40):
        rig.frame()
    assert rig.saved_steps() == [18, 36]
    tlm = rig.last_telemetry()
    assert tlm["checkpoint_policy"] == "young_daly"
    assert tlm["step_time_s"] == pytest.approx(1.0)
    assert tlm["mtbi_s"] == pytest.approx(100.0) and tlm["checkpoint_cost_s"] == 2.0
    assert tlm["checkpoint_interval_s"] == pytest.approx(18.689, abs=1e-3)
    assert tlm["checkpoint_interval_steps"] == 18


def test_the_interval_shortens_inside_the_saa(tmp_path):
    # Inside: M = 100 / 4 = 25 s; sqrt(100) * (1 + sqrt(0.04)/3 + 0.04/9) - 2 = 8.711 s -> 8 steps.
    rig = Rig(tmp_path, "yd-saa", compute="modeled", **YOUNG_DALY)
    for _ in range(3):
        rig.frame()
    assert rig.last_telemetry()["checkpoint_interval_steps"] == 18
    for _ in range(10):
        rig.frame(in_saa=True)
    tlm = rig.last_telemetry()
    assert tlm["mtbi_s"] == pytest.approx(25.0) and tlm["checkpoint_interval_steps"] == 8
    assert rig.saved_steps() == [8]


def test_the_interval_read_each_frame_follows_its_inputs(tmp_path):
    # The job computes the interval once per change of its inputs (SAA, measured step time): what
    # it publishes and its properties always equal the policy's functions of the current inputs.
    from flight import checkpoint_policy

    rig = Rig(tmp_path, "yd-follow", compute="modeled", **YOUNG_DALY)
    job, config = rig.job, rig.job.config
    for k in range(30):
        rig.frame(in_saa=k % 7 in (3, 4))
        mtbi = checkpoint_policy.mtbi_s(config.interruptions_per_day, job._in_saa, config.saa_interruption_factor)
        interval_s = checkpoint_policy.daly_interval_s(config.checkpoint_cost_s, mtbi)
        step_time = (config.step_time_s_at_tdp if job._busy_work_ref_s <= 0.0
                     else config.step_time_s_at_tdp * job._busy_mission_s / job._busy_work_ref_s)
        expected = (step_time, mtbi, interval_s, checkpoint_policy.interval_steps(interval_s, step_time))
        assert (job.step_time_s, job.mtbi_s, job.checkpoint_interval_s, job.checkpoint_interval_steps) == expected
        tlm = rig.last_telemetry()
        assert (tlm["step_time_s"], tlm["mtbi_s"], tlm["checkpoint_interval_s"],
                tlm["checkpoint_interval_steps"]) == expected


def test_the_fixed_interval_is_still_selectable(tmp_path):
    rig = Rig(tmp_path, "fixed", compute="modeled", checkpoint_interval_steps=5)
    for _ in range(12):
        rig.frame()
    assert rig.saved_steps() == [5, 10]
    assert rig.last_telemetry()["checkpoint_policy"] == "fixed"


def test_policy_settings_are_validated():
    with pytest.raises(ValueError, match="checkpoint_interval must be one of"):
        TrainingJobConfig(checkpoint_interval="often")
    with pytest.raises(ValueError, match="checkpoint_cost_s"):
        TrainingJobConfig(checkpoint_cost_s=0.0)
    with pytest.raises(ValueError, match="saa_interruption_factor"):
        TrainingJobConfig(saa_interruption_factor=0.5)


def test_scenario_keys_reach_the_job_config():
    default = training_job_config(scenario_with("starcloud1"), seed=0, compute="modeled")
    assert default.checkpoint_interval == "young_daly"
    assert (default.checkpoint_cost_s, default.interruptions_per_day, default.saa_interruption_factor) == \
        (10.0, 4.7e-4, 20.0)
    assert default.dataset is None
    # A step count alone asks for the fixed interval (as the small-model test scenarios do).
    fixed = training_job_config(scenario_with("starcloud1", training={"checkpoint_interval_steps": 50}), 0, "real")
    assert (fixed.checkpoint_interval, fixed.checkpoint_interval_steps) == ("fixed", 50)
    tuned = training_job_config(scenario_with("starcloud1", training={"interruptions_per_day": 2.0,
                                                                      "checkpoint_cost_s": 30.0}), 0, "real")
    assert (tuned.interruptions_per_day, tuned.checkpoint_cost_s) == (2.0, 30.0)
    with pytest.raises(ScenarioError, match="checkpoint_interval_steps applies only with"):
        scenario_with("starcloud1", training={"checkpoint_interval": "young_daly", "checkpoint_interval_steps": 9})
    with pytest.raises(ScenarioError, match=r"\[training\] checkpoint_interval must be one of"):
        scenario_with("starcloud1", training={"checkpoint_interval": "daily"})
    with pytest.raises(ScenarioError, match=r"\[training\] interruptions_per_day must be > 0"):
        scenario_with("starcloud1", training={"interruptions_per_day": 0.0})


def test_the_assistant_task_scenario_keys_reach_the_job_config(tiny_dialogues):
    assert training_job_config(scenario_with("starcloud1"), seed=0, compute="real").task == "text"
    scenario = scenario_with("starcloud1", training={"task": "assistant", "dialogues": str(tiny_dialogues),
                                                     "finetune_learning_rate": 1e-4, "batch_size": 4})
    config = training_job_config(scenario, seed=7, compute="real", base_weights="/w.pt")
    assert (config.task, config.dialogues, config.base_weights) == ("assistant", str(tiny_dialogues), "/w.pt")
    assert (config.finetune.seed, config.finetune.learning_rate, config.finetune.batch_size) == (7, 1e-4, 4)
    with pytest.raises(ScenarioError, match=r"\[training\] task must be one of text, assistant, got 'vision'"):
        scenario_with("starcloud1", training={"task": "vision"})
    with pytest.raises(ScenarioError, match=r"\[training\] dialogues applies only with task"):
        scenario_with("starcloud1", training={"dialogues": str(tiny_dialogues)})
    with pytest.raises(ScenarioError, match=r"\[training\] dialogues 'nope.txt': no such file"):
        scenario_with("starcloud1", training={"task": "assistant", "dialogues": "nope.txt"})


# --- checkpoints before SAA entry -------------------------------------------------------------

def test_checkpoint_once_ahead_of_each_predicted_saa_entry(tmp_path):
    rig = Rig(tmp_path, "saa", compute="modeled", lead_s=60.0)
    for _ in range(5):
        rig.frame(saa_in_s=500.0)
    assert rig.job.checkpoints_saved == 0
    for i in range(10):
        rig.frame(saa_in_s=59.0 - i)  # the same pass, seen for ten frames inside the lead
    assert rig.job.checkpoints_saved == 1
    assert any("SAA ahead" in m.body["text"] for m in rig.events.drain())
    for _ in range(5):
        rig.frame(in_saa=True)  # inside: nothing more to do for this pass
    assert rig.job.checkpoints_saved == 1
    rig.frame(saa_in_s=5700.0)
    rig.t_s += 5660
    rig.frame(saa_in_s=30.0)  # the next pass, now inside the lead
    assert rig.job.checkpoints_saved == 2


def test_an_eclipse_and_an_saa_entry_together_take_one_checkpoint(tmp_path):
    rig = Rig(tmp_path, "both", compute="modeled", lead_s=60.0)
    for _ in range(4):
        rig.frame()
    for i in range(5):
        rig.frame(umbra_in_s=50.0 - i, saa_in_s=40.0 - i)
    texts = [m.body["text"] for m in rig.events.drain() if m.body["name"] == "CHECKPOINT_SAVED"]
    assert len(texts) == 1 and "eclipse and SAA ahead" in texts[0]


def test_checkpoint_before_saa_then_power_loss_resumes_bit_identically(tmp_path):
    straight = Rig(tmp_path, "straight-saa")
    for _ in range(21):
        straight.frame()
    broken = Rig(tmp_path, "broken-saa")
    for _ in range(8):
        broken.frame(saa_in_s=100.0)
    broken.frame(saa_in_s=50.0)  # checkpoint at step 8, ahead of the SAA
    assert broken.saved_steps() == [8]
    broken.frame(in_saa=True)
    broken.gpu.powered = False  # an upset in the SAA resets the GPU: step 9 is lost
    broken.frame(in_saa=True)
    broken.gpu.powered = True
    while broken.job.steps_done < 20:
        broken.frame()
    assert broken.job.resumes == 1
    assert broken.job.weights_sha256() == straight.job.weights_sha256()


# --- two phases -------------------------------------------------------------------------------

class LoggingStore(CheckpointStore):
    def __init__(self, directory, log, fail_persists=0):
        super().__init__(directory)
        self.log = log
        self.fail_persists = fail_persists

    def snapshot(self, state):
        self.log.append(("snapshot", state["steps_done"]))
        return super().snapshot(state)

    def persist(self, snapshot, step):
        self.log.append(("persist", step))
        if self.fail_persists:
            self.fail_persists -= 1
            raise OSError(28, "No space left on device")
        return super().persist(snapshot, step)


def test_snapshot_at_the_step_boundary_then_a_separate_persist(tmp_path):
    log = []
    rig = Rig(tmp_path, "phases", store=LoggingStore(tmp_path / "phases", log))
    rig.log = rig.gpu.log = log
    for _ in range(4):
        rig.frame()
    log.clear()
    rig.frame(allowed=False)  # preempted after step 4
    assert log == [("snapshot", 4), ("set_busy", False), ("persist", 4)]
    state, info = rig.store.load_latest()
    assert info.step == 4 and state["steps_done"] == 4


def test_a_failed_persist_is_reported_and_retried(tmp_path):
    log = []
    rig = Rig(tmp_path, "fail", store=LoggingStore(tmp_path / "fail", log, fail_persists=1), compute="modeled")
    for _ in range(3):
        rig.frame()
    for i in range(3):
        rig.frame(umbra_in_s=40.0 - i)
    events = [m.body for m in rig.events.drain()]
    failed = [e for e in events if e["name"] == "CHECKPOINT_FAILED"]
    assert len(failed) == 1 and "No space left on device" in failed[0]["text"]
    assert failed[0]["step"] == 3
    # Retried in the next frame, which has completed one more step, and only once.
    assert [e["step"] for e in events if e["name"] == "CHECKPOINT_SAVED"] == [4]
    tlm = rig.last_telemetry()
    assert tlm["checkpoint_failures"] == 1 and tlm["checkpoints"] == 1


# --- a prepared dataset -----------------------------------------------------------------------

def test_the_job_trains_from_a_prepared_dataset_like_from_the_text(tmp_path):
    source = tmp_path / "sonnets.txt"
    source.write_bytes(load_default_corpus().encode("utf-8"))
    dataset = prepare(source, tmp_path / "data")
    from_text = Rig(tmp_path, "from-text")
    from_bins = Rig(tmp_path, "from-bins", dataset=str(dataset.directory))
    for _ in range(6):
        from_text.frame()
        from_bins.frame()
    assert from_bins.job.steps_done == 5
    assert from_bins.job.weights_sha256() == from_text.job.weights_sha256()


def test_a_bad_dataset_stops_the_job_at_construction(tmp_path):
    bus = Bus(lambda: 0, name="bad-dataset")
    try:
        config = TrainingJobConfig(dataset=str(tmp_path / "missing"), trainer=TINY)
        with pytest.raises(DatasetError, match="missing"):
            TrainingJob(bus, FakeGpu(), CheckpointStore(tmp_path / "ck"), config)
        with pytest.raises(ValueError, match="not both"):
            TrainingJob(bus, FakeGpu(), CheckpointStore(tmp_path / "ck"),
                        dataclasses.replace(config, dataset=str(tmp_path)), text="x" * 200)
    finally:
        bus.close()


def assistant_rig(tmp_path, name, weights, dialogues, **overrides):
    return Rig(tmp_path, name, task="assistant", dialogues=str(dialogues), base_weights=str(weights),
               finetune=DialogueTrainerConfig(seed=2, batch_size=4, num_threads=1), **overrides)


def test_the_assistant_task_fine_tunes_and_resumes_bit_identically(tmp_path, tiny_assistant_weights, tiny_dialogues):
    straight = assistant_rig(tmp_path, "a-straight", tiny_assistant_weights, tiny_dialogues)
    for _ in range(13):
        straight.frame()
    assert straight.job.steps_done == 12
    assert straight.last_telemetry()["task"] == "assistant"

    broken = assistant_rig(tmp_path, "a-broken", tiny_assistant_weights, tiny_dialogues)
    for _ in range(6):
        broken.frame()
    broken.frame(allowed=False)  # preempted, with the work of the last busy frame: checkpoint at step 6
    broken.gpu.powered = False
    broken.frame(allowed=False)
    broken.gpu.powered = True
    while broken.job.steps_done < 12:
        broken.frame()
    assert broken.job.resumes == 1
    assert broken.job.weights_sha256() == straight.job.weights_sha256()
    state, info = broken.store.load_latest()
    assert state["task"] == "assistant" and info.step == 6
    assert state["base_weights_sha256"] == load_weights(tiny_assistant_weights)["weights_sha256"]


def test_a_checkpoint_of_another_task_is_reported_and_not_used(tmp_path, tiny_assistant_weights, tiny_dialogues):
    text = Rig(tmp_path, "text-first")
    for _ in range(3):
        text.frame()
    text.frame(allowed=False)  # a text-task checkpoint in the store
    assistant = assistant_rig(tmp_path, "then-assistant", tiny_assistant_weights, tiny_dialogues, store=text.store)
    assistant.frame()
    assert "CHECKPOINT_INCOMPATIBLE" in assistant.event_names()
    assert assistant.job.incompatible_checkpoints == 1
    assert assistant.job.steps_done == 0
    assert assistant.job.weights_sha256() == load_weights(tiny_assistant_weights)["weights_sha256"]


@pytest.mark.parametrize("corpus, fault", [
    (None, "No such file or directory: .*dialogues.txt"),
    ("no answers here\n\n", "example 1: not a dialogue example"),
])
def test_a_bad_dialogue_corpus_stops_the_job_at_construction(tmp_path, tiny_assistant_weights, corpus, fault):
    path = tmp_path / "dialogues.txt"
    if corpus is not None:
        path.write_text(corpus)
    with pytest.raises(TrainingTaskError, match=fault):
        assistant_rig(tmp_path, "bad-corpus", tiny_assistant_weights, path)


def test_bad_base_weights_stop_the_job_at_construction(tmp_path, tiny_dialogues):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(TrainingTaskError, match="base weights: .*bad.pt: not a readable torch file"):
        assistant_rig(tmp_path, "bad-base", bad, tiny_dialogues)


def test_the_assistant_task_needs_dialogues_and_no_dataset():
    with pytest.raises(ValueError, match="task must be one of"):
        TrainingJobConfig(task="vision")
    with pytest.raises(ValueError, match="give dialogues"):
        TrainingJobConfig(task="assistant")
