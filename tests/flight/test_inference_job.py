"""Inference: validated requests, served before training from the same GPU, answered by the model
trained on board; in LOW_POWER the GPU wakes for inference alone."""

import json
import sqlite3

import pytest

from flight.bus import Bus
from flight.checkpoint import CheckpointStore
from flight.compute import SharedCompute
from flight.inference_job import InferenceJob, InferenceJobConfig
from flight.rate_group import TickContext
from tests.conftest import SMALL_MODEL, scenario_with
from sim.sil import SilRun


class Device:
    def __init__(self, work_per_frame):
        self.work_per_frame = work_per_frame
        self.busy = False

    def ready(self):
        return True

    def set_busy(self, busy):
        self.busy = busy

    def take_work_ref_s(self):
        return self.work_per_frame if self.busy else 0.0


def test_shared_compute_serves_jobs_in_order_up_to_their_limits():
    device = Device(work_per_frame=1.0)
    shared = SharedCompute(device)
    first, second = shared.handle("inference"), shared.handle("training")
    second.set_busy(True)
    assert device.busy
    first.limit_ref_s = 0.3
    shared.collect()
    assert first.take_work_ref_s() == pytest.approx(0.3)
    assert second.take_work_ref_s() == pytest.approx(0.7)
    second.set_busy(False)
    assert not device.busy
    shared.collect()  # the device did nothing while idle
    assert second.take_work_ref_s() == 0.0


@pytest.fixture
def job(tmp_path):
    bus = Bus(lambda: 0, name="inference-test")
    device = Device(work_per_frame=1.0)
    shared = SharedCompute(device)
    job = InferenceJob(bus, shared.handle("inference"), CheckpointStore(tmp_path),
                       InferenceJobConfig(compute="modeled", ref_s_per_token=0.01, max_queue=2))
    ground = bus.publisher("ground")
    responses = bus.subscribe(["rsp.inference"], name="responses")
    bus.settle()
    yield job, ground, responses, shared
    bus.close()


@pytest.mark.parametrize("args, status, fragment", [
    ({"prompt": "Where are you?", "max_new_tokens": 16}, "OK", ""),
    ({"prompt": ""}, "VALIDATION_ERROR", "'prompt' has 0 characters; valid: a string of 1 to 256"),
    ({"prompt": 7}, "FORMAT_ERROR", "'prompt' must be a string, got int"),
    ({"prompt": "x" * 300}, "VALIDATION_ERROR", "'prompt' has 300 characters; valid: a string of 1 to 256"),
    ({"prompt": "Wo bist du? \u00fc"}, "VALIDATION_ERROR", "does not know"),
    ({"prompt": "Where", "max_new_tokens": 0}, "VALIDATION_ERROR", "'max_new_tokens'=0 out of range: int in [1, 256]"),
])
def test_ask_is_validated(job, args, status, fragment):
    job, ground, responses, _ = job
    ground.publish("cmd.inference", {"id": 1, "opcode": "ASK", "args": args})
    job.commands.execute_commands()
    (response,) = responses.drain()
    assert response.body["status"] == status and fragment in response.body["reason"]


def test_full_queue_answers_busy(job):
    job, ground, responses, _ = job
    for i in range(3):
        ground.publish("cmd.inference", {"id": i, "opcode": "ASK", "args": {"prompt": "Where are you?"}})
    job.commands.execute_commands()
    assert [m.body["status"] for m in responses.drain()] == ["OK", "OK", "BUSY"]


def test_demand_is_the_outstanding_work(job):
    job, ground, responses, shared = job
    ground.publish("cmd.inference", {"id": 1, "opcode": "ASK", "args": {"prompt": "Where", "max_new_tokens": 45}})
    ground.publish("tlm.power", {"grants": {"inference": 1.0}})
    job.run(TickContext(0, 0, 10**9))
    assert job.outstanding_ref_s == pytest.approx(0.5)  # (5 + 45) tokens * 0.01 s
    shared.collect()  # the device worked a whole frame: 1 reference second
    job.run(TickContext(1, 10**9, 10**9))
    assert job.answered == 1 and job.outstanding_ref_s == 0.0
    assert shared._pool_ref_s == pytest.approx(0.5)  # left for training


def test_low_power_wakes_the_gpu_for_inference_only_and_the_trained_model_answers(tmp_path):
    run = SilRun(scenario_with("starcloud1", training=SMALL_MODEL), tmp_path / "run", seed=4, compute="real")
    try:
        ground = run.bus.publisher("ground")
        run.run(840)  # the checkpoint ahead of the first eclipse is written by now
        assert run.checkpoints.list_checkpoints()
        ground.publish("cmd.modes", {"id": 1, "opcode": "SET_MODE", "args": {"mode": "LOW_POWER"}})
        run.run(120)
        assert run.modes.mode == "LOW_POWER"
        assert run.world.gpu.state == "off"  # nothing to infer: no reason to power the GPU
        steps = run.training.steps_done
        ground.publish("cmd.inference", {"id": 2, "opcode": "ASK", "args": {"prompt": "Shall I compare thee",
                                                                             "max_new_tokens": 40}})
        run.run(120)
        assert run.inference.answered == 1
        assert run.training.steps_done == steps  # LOW_POWER: inference only
    finally:
        run.close()
    with sqlite3.connect(tmp_path / "run" / "telemetry.db") as db:
        (fields,) = db.execute("SELECT fields FROM events WHERE name = 'INFERENCE_ANSWER'").fetchone()
    answer = json.loads(fields)["answer"]
    assert isinstance(answer, str) and len(answer) == 40
