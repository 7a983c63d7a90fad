"""The onboard training job: a payload app that trains whenever the power manager allows, preempted
at step boundaries and checkpointed before it loses the GPU. Its task is either the character-level
GPT from its seed on a text (``task = "text"``), or the assistant's GPT fine-tuned from its shipped
weights on telemetry dialogues (``task = "assistant"``, flight/training/finetune.py), whose newest
verified checkpoint the assistant then speaks with (flight/assistant/model.py). A checkpoint of
another task or run (different corpus, base weights or config) is reported as
``CHECKPOINT_INCOMPATIBLE`` and not used.

How virtual time and real compute relate: the job declares the modelled cost of one training step
of its target workload, ``step_time_s_at_tdp`` (seconds on the target GPU at full TDP). The GPU
(simulated or real) reports the work it has done in reference seconds, accrued at its current cap
and temperature. Each time the accrued work covers one step's cost, one step completes: in
``real`` compute mode the step's math really runs on the host (CPU here) and changes the weights;
in ``modeled`` mode only the count advances. Simulated time never waits for the host: a real step
takes as long as it takes in wall time, and zero simulated time beyond what the GPU model charged.

Power loss is modelled honestly: when the GPU stops being ready (switched off, thermal trip), the
model and optimizer state that lived in device memory are dropped, and the job resumes from its
newest verified checkpoint when the GPU is back. Partial progress toward the next step is lost on
preemption (at most one step of work).

When to checkpoint. Predictable interruptions are met with a checkpoint just before them: a
preemption (the power manager's grant is published before the GPU is switched off in the same
frame), and once ``checkpoint_lead_s`` ahead of each predicted eclipse entry and each predicted
South Atlantic Anomaly entry (both forecast on ``tlm.nav``). Unpredictable ones (radiation upsets
that reset the GPU) are met by a periodic checkpoint whose interval is, with the default
``checkpoint_interval = "young_daly"``, Daly's optimum for a checkpoint cost C
(``checkpoint_cost_s``) and a mean time between interruptions M (from ``interruptions_per_day``,
multiplied by ``saa_interruption_factor`` while inside the SAA); see flight/checkpoint_policy.py.
The interval is converted to steps with the measured mission time per step (busy mission seconds
per step of work received, which includes the power cap and inference's share of the GPU; the
declared ``step_time_s_at_tdp`` until the first step). ``checkpoint_interval = "fixed"`` uses
``checkpoint_interval_steps`` instead.

C is declared, not measured: it is the mission time the target workload loses per checkpoint,
like ``step_time_s_at_tdp`` a property of the target, not of the host's small model (a host
persist takes wall time, which flight code may not read, and zero simulated time). The SIL does
not charge C against the GPU's work, so the checkpoint policy never changes what is trained.

Checkpoints are two-phase (after CheckFreq): at a step boundary (steps run whole inside a frame,
so any point after them is one) the state is snapshotted to host memory and hashed; the persist
(write, fsync, rename, verify, prune) runs as a separate phase at the end of the job's frame, after
the GPU has been given its next work. The snapshot is in host memory, so it survives the GPU
losing power. A failed persist is reported (``CHECKPOINT_FAILED``) and counted; the steps stay
unsaved, so the checkpoint is tried again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flight import checkpoint_policy
from flight.admission import is_granted
from flight.bus import Bus
from flight.checkpoint import CheckpointError, CheckpointStore, Snapshot
from flight.checkpoint_policy import GROUND_H100_INTERRUPTIONS_PER_GPU_DAY, SAA_INTERRUPTION_FACTOR
from flight.compute import ComputeDevice
from flight.events import EventReporter
from flight.rate_group import TickContext
from flight.training.dataset import PreparedDataset, load_prepared
from flight.training.finetune import BaseWeights, DialogueData, DialogueTrainer, DialogueTrainerConfig
from flight.training.trainer import Trainer, TrainerConfig

COMPUTE_MODES = ("real", "modeled")
# "text": the character-level GPT from its seed on a text or prepared dataset; "assistant": the
# assistant's GPT fine-tuned from its shipped weights on telemetry dialogues (flight/training/finetune.py).
TASKS = ("text", "assistant")
# Training yields to inference (lower runs first) and always wants as much work as it can get.
TRAINING_PRIORITY = 10


@dataclass(frozen=True)
class TrainingJobConfig:
    compute: str = "real"
    step_time_s_at_tdp: float = 4.0
    checkpoint_interval: str = "young_daly"  # or "fixed": every checkpoint_interval_steps
    checkpoint_interval_steps: int = 200
    # C: mission seconds of training one checkpoint costs the target workload (modelled: a few
    # GB of training state snapshotted and persisted to a flight SSD; a scenario parameter).
    checkpoint_cost_s: float = 10.0
    # Unpredictable interruptions (GPU resets from radiation upsets) outside the SAA, and the
    # factor on that rate inside it; defaults from domain-facts (see flight/checkpoint_policy.py).
    interruptions_per_day: float = GROUND_H100_INTERRUPTIONS_PER_GPU_DAY
    saa_interruption_factor: float = SAA_INTERRUPTION_FACTOR
    checkpoint_lead_s: float = 60.0
    eval_interval_steps: int = 100
    dataset: str | None = None  # a prepared dataset folder; None: the text given to the job
    trainer: TrainerConfig = TrainerConfig()
    task: str = "text"
    dialogues: str | None = None  # task "assistant": the dialogue corpus (a text file)
    base_weights: str | None = None  # task "assistant": the weights to start from; None: the shipped ones
    finetune: DialogueTrainerConfig = DialogueTrainerConfig()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "assistant" and (self.dialogues is None or self.dataset is not None):
            raise ValueError("the assistant task trains on a dialogue corpus: give dialogues, not a dataset")
        if self.compute not in COMPUTE_MODES:
            raise ValueError(f"compute must be one of {COMPUTE_MODES}, got {self.compute!r}")
        if self.step_time_s_at_tdp <= 0:
            raise ValueError("step_time_s_at_tdp must be > 0")
        if self.checkpoint_interval not in checkpoint_policy.POLICIES:
            raise ValueError(f"checkpoint_interval must be one of {checkpoint_policy.POLICIES}, "
                             f"got {self.checkpoint_interval!r}")
        if self.checkpoint_interval_steps < 1:
            raise ValueError("checkpoint_interval_steps must be >= 1")
        for name in ("checkpoint_cost_s", "interruptions_per_day"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.saa_interruption_factor) and self.saa_interruption_factor >= 1):
            raise ValueError(f"saa_interruption_factor must be >= 1, got {self.saa_interruption_factor!r}")


class _EntryForecast:
    """Fires once per predicted entry into a region (umbra, SAA) that is within the lead time.

    The nav forecast gives seconds to the next entry; the entry's absolute time, rounded, names
    it, so ten frames that see the same entry approaching checkpoint only once.
    """

    def __init__(self, inside_key: str, start_key: str) -> None:
        self.inside_key = inside_key
        self.start_key = start_key
        self._done_for_start_s: int | None = None

    def due(self, nav, t_s: float, lead_s: float) -> bool:
        if nav is None or nav.body.get(self.inside_key) or nav.body.get(self.start_key) is None:
            return False
        start_in_s = float(nav.body[self.start_key])
        if start_in_s > lead_s:
            return False
        start_s = round(t_s + start_in_s)
        if self._done_for_start_s is not None and abs(self._done_for_start_s - start_s) <= 2:
            return False
        self._done_for_start_s = start_s
        return True

    def forget(self) -> None:
        """The checkpoint for the last entry failed: let the next frame try again."""
        self._done_for_start_s = None


class TrainingJob:
    name = "training"

    def __init__(self, bus: Bus, device: ComputeDevice, checkpoints: CheckpointStore,
                 config: TrainingJobConfig, text: str | None = None) -> None:
        if text is not None and config.dataset is not None:
            raise ValueError("give the training job a text or a dataset, not both")
        self.config = config
        self.device = device
        self.checkpoints = checkpoints
        self._text = text
        # Validated now (a bad dataset is a start-up error naming the file), mapped, not read.
        self.dataset: PreparedDataset | None = load_prepared(config.dataset) if config.dataset else None
        self._base: BaseWeights | None = None
        self._dialogues: DialogueData | None = None
        if config.task == "assistant":
            self._base, self._dialogues = _load_assistant_task(config)
        self._pub = bus.publisher("training")
        self._events = EventReporter(bus, "training")
        self._inputs = bus.subscribe(["tlm.power", "tlm.nav"], policy="latest", name="training-job")
        self._trainer: Trainer | None = None
        self._modeled_steps: int | None = None  # the job's state in modeled mode
        self._progress_ref_s = 0.0
        self._steps_at_checkpoint = 0
        self._forecasts = {"eclipse": _EntryForecast("in_umbra", "umbra_start_in_s"),
                           "SAA": _EntryForecast("in_saa", "saa_start_in_s")}
        self._pending: tuple[Snapshot, int, str, list[str]] | None = None  # phase 1 done, phase 2 to do
        # Mission time per step, measured: busy seconds and the work they delivered.
        self._busy_mission_s = 0.0
        self._busy_work_ref_s = 0.0
        self._last_t_s: float | None = None
        self._in_saa = False
        # (inputs, (step_time_s, mtbi_s, interval_s, interval_steps)): see _interval
        self._interval_memo: tuple[tuple, tuple[float, float, float, int]] | None = None
        self.last_loss: float | None = None
        self.last_val_loss: float | None = None
        self.checkpoints_saved = 0
        self.checkpoint_failures = 0
        self.resumes = 0
        self.incompatible_checkpoints = 0
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
        self._in_saa = bool(nav is not None and nav.body.get("in_saa"))

        work_ref_s = self.device.take_work_ref_s()
        if self._busy and self._last_t_s is not None:
            # The work came from the frame interval the job held the GPU busy for.
            self._busy_mission_s += t_s - self._last_t_s
            self._busy_work_ref_s += work_ref_s
        self._last_t_s = t_s
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

        # Every decision below is at a step boundary: the steps above ran whole.
        if self.resident:
            unsaved = self.steps_done > self._steps_at_checkpoint
            if not allowed:
                if unsaved:
                    self._snapshot("preempted")
                if self._busy:
                    self.preemptions += 1
                self.lost_work_ref_s += self._progress_ref_s
                self._progress_ref_s = 0.0
            elif unsaved and (ahead := self._entries_ahead(nav, t_s)):
                self._snapshot(" and ".join(ahead) + " ahead", ahead)
            elif self.steps_done - self._steps_at_checkpoint >= self.checkpoint_interval_steps:
                self._snapshot("interval")

        busy = allowed and ready and self.resident
        self.device.set_busy(busy)
        self._busy = busy
        self.state = "training" if busy else ("preempted" if self.resident else "waiting")
        self._persist_pending()  # phase 2, with the GPU already on its next work
        self._publish()

    def _entries_ahead(self, nav, t_s: float) -> list[str]:
        """Names of the predicted entries (eclipse, SAA) now within the lead time; each once."""
        # Every forecast is asked (no short-circuit), so one checkpoint serves entries that coincide.
        due = {name: forecast.due(nav, t_s, self.config.checkpoint_lead_s)
               for name, forecast in self._forecasts.items()}
        return [name for name, is_due in due.items() if is_due]

    # -- the checkpoint interval ----------------------------------------------------------------

    def _interval(self) -> tuple[float, float, float, int]:
        """(step_time_s, mtbi_s, checkpoint_interval_s, checkpoint_interval_steps), computed (policy
        validation included) once per change of their inputs: a tick reads them up to five times."""
        key = (self.config, self._in_saa, self._busy_mission_s, self._busy_work_ref_s)
        memo = self._interval_memo
        if memo is not None and memo[0] == key:
            return memo[1]
        config = self.config
        if self._busy_work_ref_s <= 0.0:
            step_time_s = config.step_time_s_at_tdp
        else:
            step_time_s = config.step_time_s_at_tdp * self._busy_mission_s / self._busy_work_ref_s
        mtbi_s = checkpoint_policy.mtbi_s(config.interruptions_per_day, self._in_saa, config.saa_interruption_factor)
        if config.checkpoint_interval == "fixed":
            interval_s = config.checkpoint_interval_steps * step_time_s
            interval_steps = config.checkpoint_interval_steps
        else:
            interval_s = checkpoint_policy.daly_interval_s(config.checkpoint_cost_s, mtbi_s)
            interval_steps = checkpoint_policy.interval_steps(interval_s, step_time_s)
        values = (step_time_s, mtbi_s, interval_s, interval_steps)
        self._interval_memo = (key, values)
        return values

    @property
    def step_time_s(self) -> float:
        """Mission seconds per training step, as measured (the declared TDP cost until then)."""
        return self._interval()[0]

    @property
    def mtbi_s(self) -> float:
        """M: mean time between unpredictable interruptions at the current rate (SAA or not)."""
        return self._interval()[1]

    @property
    def checkpoint_interval_s(self) -> float:
        """The interval in mission seconds of training: Daly's optimum, or the fixed steps' worth."""
        return self._interval()[2]

    @property
    def checkpoint_interval_steps(self) -> int:
        return self._interval()[3]

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

    def _snapshot(self, why: str, entries: list[str] = ()) -> None:
        """Phase 1, at a step boundary: the state serialised and hashed in host memory."""
        self._pending = (self.checkpoints.snapshot(self._state()), self.steps_done, why, list(entries))

    def _persist_pending(self) -> None:
        """Phase 2: write the snapshot atomically and verify it; a failure is reported, not raised."""
        if self._pending is None:
            return
        snapshot, step, why, entries = self._pending
        self._pending = None
        try:
            path = self.checkpoints.persist(snapshot, step)
        except (OSError, CheckpointError) as err:
            self.checkpoint_failures += 1
            for name in entries:
                self._forecasts[name].forget()
            self._events.emit("WARNING_HI", "CHECKPOINT_FAILED",
                              f"checkpoint at step {step} ({why}) not saved: {err}", step=step)
            return
        self._steps_at_checkpoint = step
        self.checkpoints_saved += 1
        self._events.emit("ACTIVITY_LO", "CHECKPOINT_SAVED", f"checkpoint at step {step} ({why})",
                          step=step, file=path.name)

    def _new_trainer(self) -> Trainer | DialogueTrainer:
        if self.config.task == "assistant":
            return DialogueTrainer(self.config.finetune, self._base, self._dialogues)
        return Trainer(self.config.trainer, self._text, self.dataset)

    def _restore(self, announce: bool) -> None:
        loaded = self.checkpoints.load_latest()
        if self.config.compute == "real":
            self._trainer = self._new_trainer()
            if loaded is not None:
                try:
                    self._trainer.load_state_dict(loaded[0])
                except (ValueError, KeyError) as exc:
                    # Another task's or run's state (a changed corpus, base or config): using it would
                    # train something else than asked. Counted and reported; this run starts afresh.
                    self.incompatible_checkpoints += 1
                    self._events.emit("WARNING_HI", "CHECKPOINT_INCOMPATIBLE",
                                      f"{loaded[1].path.name} does not fit this job ({exc}); starting afresh",
                                      file=loaded[1].path.name)
                    self._trainer = self._new_trainer()
                    loaded = None
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
        step_time_s, mtbi_s, interval_s, interval_steps = self._interval()
        self._pub.publish("tlm.training", {
            "state": self.state,
            "task": self.config.task,
            "steps": self.steps_done,
            "loss": self.last_loss,
            "val_loss": self.last_val_loss,
            "progress_ref_s": self._progress_ref_s,
            "checkpoints": self.checkpoints_saved,
            "checkpoints_rejected": self.checkpoints.rejected_count,
            "checkpoint_failures": self.checkpoint_failures,
            "checkpoint_policy": self.config.checkpoint_interval,
            "checkpoint_interval_steps": interval_steps,
            "checkpoint_interval_s": interval_s,
            "checkpoint_cost_s": self.config.checkpoint_cost_s,
            "mtbi_s": mtbi_s,
            "step_time_s": step_time_s,
            "resumes": self.resumes,
            "checkpoints_incompatible": self.incompatible_checkpoints,
            "preemptions": self.preemptions,
            "demand_kind": "training",
            "demand_priority": TRAINING_PRIORITY,
            "demand_ref_s": math.inf,
        })


class TrainingTaskError(ValueError):
    """The training task cannot start: its base weights or corpus are missing or bad (the message says which)."""


def _load_assistant_task(config: TrainingJobConfig) -> tuple[BaseWeights, DialogueData]:
    """The verified base weights and the dialogue corpus, read once at start-up; a bad file is a
    start-up error naming it."""
    from flight.assistant.model import AssistantModelError, load_weights  # the weights file format

    try:
        base = BaseWeights.from_payload(load_weights(config.base_weights))
    except AssistantModelError as exc:
        raise TrainingTaskError(f"assistant task base weights: {exc}") from None
    path = Path(config.dialogues)
    try:
        text = path.read_text(encoding="utf-8")
        return base, DialogueData.from_text(text, base.vocab, int(base.config["block_size"]), source=str(path))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TrainingTaskError(f"assistant task dialogues: {exc}") from None
