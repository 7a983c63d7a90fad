"""The training job: steps follow the GPU's work, checkpoints precede power loss, and a job that
loses its GPU and resumes from a checkpoint ends bit-identical to one that never stopped."""

import pytest

from flight.bus import Bus
from flight.checkpoint import CheckpointStore
from flight.rate_group import TickContext
from flight.training.trainer import TrainerConfig
from flight.training_job import TrainingJob, TrainingJobConfig

STEP_COST_S = 2.0
TINY = TrainerConfig(seed=5, batch_size=4, block_size=16, n_layer=1, n_head=2, n_embd=16, num_threads=1)


class FakeGpu:
    """Does exactly one step's work per frame while busy and powered."""

    def __init__(self):
        self.powered = True
        self.busy = False
        self.frames_busy = 0

    def ready(self):
        return self.powered

    def set_busy(self, busy):
        self.busy = busy and self.powered

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

    def __init__(self, tmp_path, name, compute="real", lead_s=60.0):
        Rig.open.append(self)
        self.t_s = 0
        self.bus = Bus(lambda: self.t_s * 10**9, name=name)
        self.ground = self.bus.publisher("test")
        self.gpu = FakeGpu()
        self.store = CheckpointStore(tmp_path / name)
        config = TrainingJobConfig(compute=compute, step_time_s_at_tdp=STEP_COST_S, checkpoint_interval_steps=1000,
                                   checkpoint_lead_s=lead_s, eval_interval_steps=1000, trainer=TINY)
        self.job = TrainingJob(self.bus, self.gpu, self.store, config)
        self.events = self.bus.subscribe(["evt.training"], name="events")
        self.bus.settle()

    def frame(self, allowed=True, umbra_in_s=None):
        self.ground.publish("tlm.power", {"grants": {"training": 1.0} if allowed else {}})
        self.ground.publish("tlm.nav", {"in_umbra": False, "umbra_start_in_s": umbra_in_s})
        self.job.run(TickContext(tick=self.t_s, t_ns=self.t_s * 10**9, period_ns=10**9))
        self.t_s += 1

    def event_names(self):
        return [m.body["name"] for m in self.events.drain()]


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
