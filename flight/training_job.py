"""The onboard training job: a payload app that trains the character-level GPT whenever the power
manager allows, preempted at step boundaries and checkpointed before it loses the GPU.

How virtual time and real compute relate: the job declares the modelled cost of one training step
of its target workload, ``step_time_s_at_tdp`` (seconds on the target GPU at full TDP). The GPU
(simulated or real) reports the work it has done in reference seconds, accrued at its current cap
and temperature. Each time the accrued work covers one step's cost, one step completes: in
``real`` compute mode the step's math really runs on the host (CPU here) and changes the weights;
in ``modeled`` mode only the count advances. Simulated time never waits for the host: a real step
takes as long as it takes in wall time, and zero simulated time beyond what the GPU model charged.

Power loss is modelled honestly: when the GPU stops being ready (switched off, thermal trip), the
model and optimizer state that lived in device memory are dropped, and the job resumes from its
newest verified checkpoint when the GPU is back. Checkpoints are taken: before a preemption (the
power manager's grant is published before the GPU is switched off in the same frame), once ahead of
each predicted eclipse entry (``checkpoint_lead_s``), and every ``checkpoint_interval_steps``.
Partial progress toward the next step is lost on preemption (at most one step of work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flight.admission import is_granted
from flight.bus import Bus
from flight.checkpoint import CheckpointStore
from flight.compute import ComputeDevice
from flight.events import EventReporter
from flight.rate_group import TickContext
from flight.training.trainer import Trainer, TrainerConfig

COMPUTE_MODES = ("real", "modeled")
# Training yields to inference (lower runs first) and always wants as much work as it can get.
TRAINING_PRIORITY = 10


@dataclass(frozen=True)
class TrainingJobConfig:
    compute: str = "real"
    step_time_s_at_tdp: float = 4.0
    checkpoint_interval_steps: int = 200
    checkpoint_lead_s: float = 60.0
    eval_interval_steps: int = 100
    trainer: TrainerConfig = TrainerConfig()

    def __post_init__(self) -> None:
        if self.compute not in COMPUTE_MODES:
            raise ValueError(f"compute must be one of {COMPUTE_MODES}, got {self.compute!r}")
        if self.step_time_s_at_tdp <= 0:
            raise ValueError("step_time_s_at_tdp must be > 0")


class TrainingJob:
    name = "training"

    def __init__(self, bus: Bus, device: ComputeDevice, checkpoints: CheckpointStore,
                 config: TrainingJobConfig, text: str | None = None) -> None:
        self.config = config
        self.device = device
        self.checkpoints = checkpoints
        self._text = text
        self._pub = bus.publisher("training")
        self._events = EventReporter(bus, "training")
        self._inputs = bus.subscribe(["tlm.power", "tlm.nav"], policy="latest", name="training-job")
        self._trainer: Trainer | None = None
        self._modeled_steps: int | None = None  # the job's state in modeled mode
        self._progress_ref_s = 0.0
        self._steps_at_checkpoint = 0
        self._checkpointed_for_umbra_start_s: int | None = None
        self.last_loss: float | None = None
        self.last_val_loss: float | None = None
        self.checkpoints_saved = 0
        self.resumes = 0
        self.preemptions = 0
        self.lost_work_ref_s = 0.0
        self.state = "waiting"
        self._busy = False
        self._rejections_reported = 0

    # -- state ----------------------------------------------------------------------------------

    @property
    def resident(self) -> bool:
        """Model state is in device memory."""
        return self._trainer is not None or self._modeled_steps is not None

    @property
    def steps_done(self) -> int:
        if self._trainer is not None:
            return self._trainer.steps_done
        if self._modeled_steps is not None:
            return self._modeled_steps
        return self._steps_at_checkpoint

    def weights_sha256(self) -> str | None:
        """Hash of the current weights (restoring the newest checkpoint if the GPU is off)."""
        if self.config.compute != "real":
            return None
        if self._trainer is None:
            self._restore(announce=False)
        return self._trainer.weights_sha256() if self._trainer is not None else None

    # -- the frame ------------------------------------------------------------------------------

    def run(self, ctx: TickContext) -> None:
        self._inputs.drain()
        grant = self._inputs.latest("tlm.power")
        nav = self._inputs.latest("tlm.nav")
        allowed = is_granted(grant, self.name)
        t_s = ctx.t_ns / 1e9

        work_ref_s = self.device.take_work_ref_s()
        if self.resident:
            self._progress_ref_s += work_ref_s
            while self._progress_ref_s >= self.config.step_time_s_at_tdp:
                self._progress_ref_s -= self.config.step_time_s_at_tdp
                self._step()

        ready = self.device.ready()
        if self.resident and not ready:
            self._lose_device_state()
        if allowed and ready and not self.resident:
            self._restore(announce=True)

        if self.resident:
            unsaved = self.steps_done > self._steps_at_checkpoint
            if not allowed:
                if unsaved:
                    self._checkpoint("preempted")
                if self._busy:
                    self.preemptions += 1
                self.lost_work_ref_s += self._progress_ref_s
                self._progress_ref_s = 0.0
            elif unsaved and self._eclipse_ahead(nav, t_s):
                self._checkpoint("eclipse ahead")
            elif self.steps_done - self._steps_at_checkpoint >= self.config.checkpoint_interval_steps:
                self._checkpoint("interval")

        busy = allowed and ready and self.resident
        self.device.set_busy(busy)
        self._busy = busy
        self.state = "training" if busy else ("preempted" if self.resident else "waiting")
        self._publish()

    def _eclipse_ahead(self, nav, t_s: float) -> bool:
        if nav is None or nav.body.get("in_umbra") or nav.body.get("umbra_start_in_s") is None:
            return False
        start_in_s = float(nav.body["umbra_start_in_s"])
        if start_in_s > self.config.checkpoint_lead_s:
            return False
        umbra_start_s = round(t_s + start_in_s)
        if self._checkpointed_for_umbra_start_s is not None and \
                abs(self._checkpointed_for_umbra_start_s - umbra_start_s) <= 2:
            return False
        self._checkpointed_for_umbra_start_s = umbra_start_s
        return True

    # -- actions --------------------------------------------------------------------------------

    def _step(self) -> None:
        if self._trainer is not None:
            self.last_loss = self._trainer.step()
            if self._trainer.steps_done % self.config.eval_interval_steps == 0:
                self.last_val_loss = self._trainer.evaluate()
        else:
            self._modeled_steps += 1

    def _state(self) -> dict[str, Any]:
        if self._trainer is not None:
            return self._trainer.state_dict()
        return {"mode": "modeled", "steps_done": self._modeled_steps}

    def _checkpoint(self, why: str) -> None:
        path = self.checkpoints.save(self._state(), self.steps_done)
        self._steps_at_checkpoint = self.steps_done
        self.checkpoints_saved += 1
        self._events.emit("ACTIVITY_LO", "CHECKPOINT_SAVED", f"checkpoint at step {self.steps_done} ({why})",
                          step=self.steps_done, file=path.name)

    def _restore(self, announce: bool) -> None:
        loaded = self.checkpoints.load_latest()
        if self.config.compute == "real":
            self._trainer = Trainer(self.config.trainer, self._text)
            if loaded is not None:
                self._trainer.load_state_dict(loaded[0])
        else:
            self._modeled_steps = int(loaded[0]["steps_done"]) if loaded is not None else 0
        self._progress_ref_s = 0.0
        self._steps_at_checkpoint = self.steps_done
        if announce:
            if loaded is not None:
                self.resumes += 1
                self._events.emit("ACTIVITY_HI", "TRAINING_RESUMED",
                                  f"resumed from verified checkpoint at step {self.steps_done}",
                                  step=self.steps_done)
            else:
                self._events.emit("ACTIVITY_HI", "TRAINING_STARTED", "no checkpoint: training from the seed")
        for path, reason in self.checkpoints.rejected[self._rejections_reported:]:
            self._events.emit("WARNING_HI", "CHECKPOINT_REJECTED", f"{path}: {reason}")
        self._rejections_reported = len(self.checkpoints.rejected)

    def _lose_device_state(self) -> None:
        lost = self.steps_done - self._steps_at_checkpoint
        self._trainer = None
        self._modeled_steps = None
        self.lost_work_ref_s += self._progress_ref_s
        self._progress_ref_s = 0.0
        if lost:
            self._events.emit("WARNING_HI", "GPU_STATE_LOST",
                              f"GPU lost power; {lost} steps since the last checkpoint are lost", lost_steps=lost)
        else:
            self._events.emit("ACTIVITY_LO", "GPU_POWERED_DOWN", "GPU lost power; every step is checkpointed",
                              lost_steps=0)

    def _publish(self) -> None:
        self._pub.publish("tlm.training", {
            "state": self.state,
            "steps": self.steps_done,
            "loss": self.last_loss,
            "val_loss": self.last_val_loss,
            "progress_ref_s": self._progress_ref_s,
            "checkpoints": self.checkpoints_saved,
            "checkpoints_rejected": self.checkpoints.rejected_count,
            "resumes": self.resumes,
            "preemptions": self.preemptions,
            "demand_kind": "training",
            "demand_priority": TRAINING_PRIORITY,
            "demand_ref_s": math.inf,
        })
