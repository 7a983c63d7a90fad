"""Software-in-the-loop wiring: the world, the HAL sim backends and the flight software, in one
process, in lockstep.

This is the one module that knows all three rooms. The simulator is the time master: each base
tick it steps the world by ``step_s``, advances the flight clock by the same amount and runs one
scheduler tick. Nothing here reads the wall clock; the caller measures wall time if it wants it.

The rate groups are data, in ``flight/schedules/sil.toml``. Frame order (group ``frame``, every
tick): HAL services publish telemetry sampled at the new time -> the mode manager applies faults
and mode commands -> the power manager decides GPU state and cap and admits payload work -> the
GPU's work of the last step is shared out, inference first, then training, which checkpoints if
its grant or the eclipse forecast says so -> the EPS and GPU services execute the frame's commands
-> (group ``store``) the telemetry store records everything published. A housekeeping group
publishes bus and scheduler counters every 10 ticks.

The assistant's language model (``assistant_model``): "auto" is the shipped onboard model with
``real`` compute and templates with ``modeled`` compute (fast sims); "onboard" the shipped model,
"none" templates; a path is a weights file (flight/assistant/model.py) or a Hugging Face model
directory. The model is loaded at the first question, once; if it cannot be, the assistant says
why (an ``ASSISTANT_NO_MODEL`` event, and the run summary) and answers from templates. With the
training task "assistant" (scenario [training] task) and ``real`` compute, the training job
fine-tunes that onboard model on the scenario's dialogue corpus, and the assistant speaks with the
newest verified checkpoint of it as soon as there is one (flight/assistant/model.py). Its answers
are GPU work admitted by the power manager like the inference job's (flight/assistant/service.py).
Nothing here reads the environment: the tools resolve $SUNLIT_HF_MODEL (tools/run_sim.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from flight.admission import GpuPerformanceModel
from flight.assistant.backends import looks_like_hf_model
from flight.assistant.model import CheckpointAssistantModel
from flight.assistant.service import Assistant, AssistantConfig, ModelUnavailable
from flight.bus import Bus
from flight.checkpoint import CheckpointStore
from flight.clock import SteppedClock, iso_utc
from flight.compute import SharedCompute
from flight.dispatcher import Dispatcher
from flight.downlink import Downlink, DownlinkConfig, DownlinkTransport, LoopbackTransport
from flight.sequencer import Sequencer, SequencerConfig
from flight.inference_job import InferenceJob, InferenceJobConfig
from flight.modes import ModeConfig, ModeManager
from flight.power_manager import PowerManager, PowerManagerConfig
from flight.events import EventReporter
from flight.rate_group import TickContext
from flight.schedule_table import default_sil_table
from flight.telemetry_store import TelemetryStore
from flight.training.dataset import load_prepared
from flight.training.dialogue import vocabulary
from flight.training.finetune import DialogueTrainerConfig
from flight.training.trainer import TrainerConfig
from flight.training_job import TrainingJob, TrainingJobConfig
from hal.service import DeviceService
from hal.sim_backends import SimAccelerator, SimEps, SimGpu, SimNav, SimThermal
from hal.sim_ephemeris import SimEphemeris
from hal.sim_radio import SimRadio
from sim.scenario import Scenario
from sim.world import World, gpu_params

NS_PER_S = 1_000_000_000
# Or a path: a weights file, a Hugging Face model directory, or a training checkpoint directory (the
# newest verified checkpoint of an assistant fine-tuning run, e.g. runs/X/checkpoints).
ASSISTANT_MODELS = ("auto", "none", "onboard")


class AssistantModelChoiceError(ValueError):
    """An assistant model choice that is neither a known name nor an existing file or directory."""


class AssistantModelLoader:
    """The assistant's generator factory: loads the chosen model at the first call, once.

    kind "onboard": the assistant's GPT weights (``path`` None: the shipped file); kind "hf": a
    Hugging Face model directory. When the model cannot be loaded, every call raises
    ModelUnavailable with the reason (kept in ``error``).
    """

    def __init__(self, kind: str, path: Path | None = None) -> None:
        if kind not in ("onboard", "hf"):
            raise ValueError(f"model kind must be 'onboard' or 'hf', got {kind!r}")
        self.kind = kind
        self.path = path
        self.generator: Any = None
        self.error: str | None = None
        self._tried = False

    def __call__(self) -> Any:
        if not self._tried:
            self._tried = True
            self._load()
        if self.generator is None:
            raise ModelUnavailable(self.error or "no model")
        return self.generator

    def _load(self) -> None:
        if self.kind == "hf":
            from flight.assistant.backends import BackendUnavailable, HuggingFaceGenerator

            try:
                self.generator = HuggingFaceGenerator(self.path)
            except BackendUnavailable as exc:
                self.error = str(exc)
            return
        from flight.assistant.model import last_load_error, load_assistant_generator

        self.generator = load_assistant_generator(self.path)
        if self.generator is None:
            self.error = last_load_error(self.path) or "the assistant's weights did not load"


def assistant_model_source(choice: str | Path, compute: str) -> AssistantModelLoader | CheckpointAssistantModel | None:
    """The generator factory for an ``assistant_model`` choice (None: templates only)."""
    text = str(choice)
    if text == "none" or (text == "auto" and compute != "real"):
        return None
    if text in ("auto", "onboard"):
        return AssistantModelLoader("onboard")
    path = Path(text)
    if path.is_dir() and not looks_like_hf_model(path) and any(path.glob("ckpt-*.ckpt")):
        return CheckpointAssistantModel(CheckpointStore(path), fallback=_no_assistant_checkpoint(path))
    if path.is_dir():
        return AssistantModelLoader("hf", path)
    if path.is_file():
        return AssistantModelLoader("onboard", path)
    raise AssistantModelChoiceError(f"assistant model {text!r}: not one of {', '.join(ASSISTANT_MODELS)}, "
                                    f"nor an existing weights file, model directory or checkpoint directory")


def _no_assistant_checkpoint(path: Path) -> Callable[[], Any]:
    def fallback() -> Any:
        raise ModelUnavailable(f"{path}: no verified checkpoint of the assistant fine-tuning task")
    return fallback


def training_job_config(scenario: Scenario, seed: int, compute: str,
                        base_weights: str | Path | None = None) -> TrainingJobConfig:
    """The training job's configuration from a scenario's [training] section; ``base_weights``: the
    weights the assistant task starts from (None: the shipped ones)."""
    t = scenario.training
    trainer = TrainerConfig(
        seed=seed, batch_size=t["batch_size"], block_size=t["block_size"], n_layer=t["n_layer"],
        n_head=t["n_head"], n_embd=t["n_embd"], learning_rate=t["learning_rate"],
        num_threads=t["num_threads"],
    )
    return TrainingJobConfig(
        compute=compute, step_time_s_at_tdp=t["step_time_s_at_tdp"],
        checkpoint_interval=t["checkpoint_interval"], checkpoint_interval_steps=t["checkpoint_interval_steps"],
        checkpoint_cost_s=t["checkpoint_cost_s"], interruptions_per_day=t["interruptions_per_day"],
        saa_interruption_factor=t["saa_interruption_factor"], checkpoint_lead_s=t["checkpoint_lead_s"],
        eval_interval_steps=t["eval_interval_steps"], dataset=t["dataset"], trainer=trainer,
        task=t["task"], dialogues=t["dialogues"],
        base_weights=str(base_weights) if base_weights is not None else None,
        finetune=DialogueTrainerConfig(seed=seed, batch_size=t["batch_size"],
                                       learning_rate=t["finetune_learning_rate"], num_threads=t["num_threads"]),
    )


def power_manager_config(scenario: Scenario, policy: str = "manager") -> PowerManagerConfig:
    return PowerManagerConfig(
        policy=policy,
        dod_limit=scenario.battery["dod_limit"],
        reserve_margin_fraction=scenario.power_manager["reserve_margin_fraction"],
        min_on_time_s=scenario.power_manager["min_on_time_s"],
        gpu_idle_power_w=scenario.gpu["idle_power_w"],
        gpu_boot_time_s=scenario.gpu["boot_time_s"],
        performance=GpuPerformanceModel(
            idle_power_w=scenario.gpu["idle_power_w"], tdp_w=scenario.gpu["tdp_w"],
            throughput_exponent=gpu_params(scenario).throughput_exponent),
    )


def _acknowledge_all(batch: dict) -> dict:
    """A ground station that archives everything it hears (elsewhere) and says so."""
    return {"type": "ack", "store_id": batch["store_id"], "ids": [frame_id for frame_id, _ in batch["frames"]]}


@dataclass
class RunStats:
    """Truth-side accounting, from the world, independent of what flight software believes."""

    steps: int = 0
    battery_soc_min: float = 1.0
    dod_violations: int = 0
    gpu_die_temp_max_c: float = -math.inf


class SilRun:
    def __init__(self, scenario: Scenario, out_dir: Path, seed: int = 0, compute: str = "real",
                 text: str | None = None, policy: str = "manager",
                 uplink: list[tuple[str, dict[str, Any]]] = (),
                 downlink_transport: DownlinkTransport | None = None,
                 assistant_model: str | Path = "auto") -> None:
        self.assistant_source = assistant_model_source(assistant_model, compute)  # a bad choice fails first
        self.assistant_model = str(assistant_model)
        self.scenario = scenario
        self.seed = seed
        self.compute = compute
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.world = World(scenario)
        self.step_s = self.world.step_s
        self.clock = SteppedClock(epoch_utc=scenario.epoch_utc)
        self.bus = Bus(self.clock.now_ns, name="sil")
        self._hk = self.bus.publisher("scheduler")

        noise = bool(scenario.simulation["telemetry_noise"])
        self.services = {
            "nav": DeviceService(SimNav(self.world), self.bus),
            "eps": DeviceService(SimEps(self.world, seed, noise), self.bus),
            "thermal": DeviceService(SimThermal(self.world, seed, noise), self.bus),
            "gpu": DeviceService(SimGpu(self.world, seed, noise), self.bus),
            "radio": DeviceService(SimRadio(self.world), self.bus),
            "ephemeris": DeviceService(SimEphemeris(self.world), self.bus),
        }
        self.modes = ModeManager(self.bus, ModeConfig(dod_limit=scenario.battery["dod_limit"],
                                                      safe_below_floor=policy == "manager"))
        self.dispatcher = Dispatcher(self.bus)
        self.sequencer = Sequencer(self.bus, scenario.epoch_utc,
                                   SequencerConfig(arming_window_s=self.dispatcher.config.arm_window_s))
        power_config = power_manager_config(scenario, policy)
        self.power_manager = PowerManager(self.bus, power_config)
        self.checkpoints = CheckpointStore(self.out_dir / "checkpoints")
        self.shared_compute = SharedCompute(SimAccelerator(self.world))
        source = self.assistant_source
        onboard = isinstance(source, AssistantModelLoader) and source.kind == "onboard"
        base_weights = source.path if onboard else None
        training_config = training_job_config(scenario, seed, compute, base_weights)
        # Inference takes a text for its vocabulary: with a prepared dataset, the text it was prepared
        # from; with the assistant task, the assistant's vocabulary.
        if training_config.task == "assistant":
            inference_text = vocabulary()
            if compute == "real" and onboard:
                # The assistant speaks with the newest checkpoint fine-tuned on board, once there is one.
                self.assistant_source = CheckpointAssistantModel(self.checkpoints, fallback=source)
        elif training_config.dataset is not None:
            inference_text = load_prepared(training_config.dataset).text()
        else:
            inference_text = text
        self.inference = InferenceJob(self.bus, self.shared_compute.handle("inference"), self.checkpoints,
                                      InferenceJobConfig(compute=compute), text=inference_text)
        self.training = TrainingJob(self.bus, self.shared_compute.handle("training"), self.checkpoints,
                                    training_config, text=text)
        self.assistant = Assistant(self.bus, self.clock.utc_at, generator=self.assistant_source,
                                   compute=self.shared_compute.handle("assistant"),
                                   config=AssistantConfig(performance=power_config.performance))
        # Store-and-forward: the onboard queue, sent in ground passes. Without a transport from the
        # caller the ground is a perfect one that acknowledges everything it hears. Out of contact
        # it commits once a simulated minute (a commit costs ~100 us, ~6x the tick's inserts): a
        # kill loses at most the last minute of frames, none of them sent or acknowledged; in
        # contact, on acks and at close it always commits (flight/downlink.py).
        self.downlink = Downlink(
            self.bus, self.out_dir / "downlink.db", None,
            downlink_transport if downlink_transport is not None else LoopbackTransport(_acknowledge_all, history=0),
            DownlinkConfig(store_name=f"sil-{scenario.name}-seed{seed}", fsync_in_contact=False,
                           commit_interval_s=60.0, housekeeping_period_s=10.0, bulk_period_s=60.0),
            created_t_ns=self.clock.now_ns(), fed=True)
        self.store = TelemetryStore(
            self.bus, self.out_dir / "telemetry.db",
            meta={"scenario": scenario.name, "seed": seed, "compute": compute,
                  "epoch_utc": iso_utc(scenario.epoch_utc), "step_s": self.step_s},
            epoch_unix_s=scenario.epoch_utc.timestamp(), listeners=(self.downlink.feed,),
        )
        # Rate groups are data (flight/schedules/sil.toml); this registry is all the wiring.
        registry = {
            "nav.publish": self.services["nav"].publish_telemetry,
            "radio.publish": self.services["radio"].publish_telemetry,
            "radio.commands": self.services["radio"].execute_commands,
            "ephemeris.publish": self.services["ephemeris"].publish_telemetry,
            "ephemeris.commands": self.services["ephemeris"].execute_commands,
            "assistant.run": self.assistant.run,
            "assistant.publish": self.assistant.publish_telemetry,
            "downlink.run": self.downlink.run,
            "eps.publish": self.services["eps"].publish_telemetry,
            "thermal.publish": self.services["thermal"].publish_telemetry,
            "gpu.publish": self.services["gpu"].publish_telemetry,
            "modes.run": self.modes.run,
            "power.run": self.power_manager.run,
            "compute.collect": self.shared_compute.collect,
            "inference.run": self.inference.run,
            "payload.run": self.training.run,
            "eps.commands": self.services["eps"].execute_commands,
            "gpu.commands": self.services["gpu"].execute_commands,
            "nav.commands": self.services["nav"].execute_commands,
            "thermal.commands": self.services["thermal"].execute_commands,
            "sequencer.run": self.sequencer.run,
            "sequencer.commands": self.sequencer.execute_commands,
            "dispatcher.run": self.dispatcher.run,
            "dispatcher.collect": self.dispatcher.collect,
            "dispatcher.publish": self.dispatcher.publish_telemetry,
            "housekeeping.publish": self._publish_housekeeping,
            "store.run": self.store.run,
        }
        self.schedule = default_sil_table()
        # The simulator is the time master: one base tick per world step, whatever the table's
        # nominal period. Slip, skip and table-switch events go out on evt.scheduler.
        self._scheduler_events = EventReporter(self.bus, "scheduler")
        self.driver = self.schedule.build_driver(
            registry, base_period_ns=self.step_s * NS_PER_S, on_event=self._scheduler_events.emit)
        self.stats = RunStats()
        self.bus.settle()
        # Commands given with the run (a stored sequence's LOAD and START) go in through the
        # dispatcher like any ground command, answered in frame zero.
        uplink_pub = self.bus.publisher("sim_uplink")
        for command_id, (command, args) in enumerate(uplink, start=1):
            uplink_pub.publish("cmd.dispatch", {"id": command_id, "command": command, "args": args})
        self.driver.tick(self.clock.now_ns())  # frame zero: telemetry and a first decision at the epoch
        self._account()
        self.finished = False

    @property
    def t_s(self) -> int:
        return self.world.t_s

    def step(self) -> None:
        self.world.step()
        self.clock.advance(self.step_s * NS_PER_S)
        self.driver.tick(self.clock.now_ns())
        self._account()

    def run(self, duration_s: float, progress: Callable[[int], None] | None = None,
            progress_every_steps: int = 60) -> None:
        """Run for duration_s simulated seconds (rounded up to whole steps)."""
        n_steps = math.ceil(duration_s / self.step_s)
        for i in range(1, n_steps + 1):
            self.step()
            if progress is not None and (i % progress_every_steps == 0 or i == n_steps):
                progress(self.world.t_s)

    def _account(self) -> None:
        stats = self.stats
        soc = self.world.battery.soc
        stats.steps += 1
        stats.battery_soc_min = min(stats.battery_soc_min, soc)
        if soc < self.scenario.soc_floor - 1e-12:
            stats.dod_violations += 1
        stats.gpu_die_temp_max_c = max(stats.gpu_die_temp_max_c, self.world.thermal.die_temp_c)

    def _publish_housekeeping(self, ctx: TickContext) -> None:
        bus_stats = self.bus.stats()
        self._hk.publish("tlm.bus", {
            "messages_sent": self.bus.messages_sent,
            "dropped_total": sum(s["dropped_total"] for s in bus_stats.values()),
            "malformed_total": sum(s["malformed"] for s in bus_stats.values()),
        })
        body: dict[str, Any] = {"frame_slips": self.driver.frame_slips, "member_errors": self.driver.error_count,
                                "skipped_ticks": self.driver.skipped_ticks}
        for name, group in self.driver.telemetry().items():
            body[f"{name}_skipped_ticks"] = group["skipped_ticks"]
            body[f"{name}_cycles"] = group["cycles"]
            body[f"{name}_cycle_slips"] = group["cycle_slips"]
            body[f"{name}_max_exec_ns"] = group["max_exec_ns"]
        self._hk.publish("tlm.scheduler", body)

    def close(self) -> None:
        """Release the stores and the bus (after finish(), or when a run is abandoned)."""
        if not self.finished:
            self.store.close()
            self.downlink.close()
            self.finished = True
        self.bus.close()

    def finish(self) -> dict[str, Any]:
        """Flush the store, close the bus and return the run summary (without wall time)."""
        downlink = self.downlink.telemetry()
        if not self.finished:
            self.store.close()
            self.downlink.close()
            self.finished = True
        weights = self.training.weights_sha256()
        bus_stats = self.bus.stats()
        self.bus.close()
        world, stats = self.world, self.stats
        epoch = self.scenario.epoch_utc
        eclipses = [
            {"start": iso_utc(self.clock.utc_at(round(b * NS_PER_S)), "seconds"),
             "end": iso_utc(self.clock.utc_at(round(e * NS_PER_S)), "seconds"),
             "duration_s": round(e - b, 1)}
            for b, e in world.orbit.umbra_begun_between(0.0, float(world.t_s))
        ]
        ledger = world.ledger
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "compute": self.compute,
            "epoch_utc": iso_utc(epoch, "seconds"),
            "sim_seconds": world.t_s,
            "step_s": self.step_s,
            "eclipses": eclipses,
            "battery_soc_min": stats.battery_soc_min,
            "battery_soc_final": world.battery.soc,
            "dod_limit": self.scenario.battery["dod_limit"],
            "dod_violations": stats.dod_violations,
            "energy_wh": {
                "solar": ledger.solar_wh, "gpu": ledger.gpu_wh, "bus": ledger.bus_wh,
                "shunted": ledger.shunted_wh, "unserved": ledger.unserved_wh,
                "battery_losses": world.battery.losses_wh,
                "gpu_busy": world.gpu.busy_energy_j / 3600.0,
            },
            "brownout_steps": ledger.brownout_steps,
            "training_task": self.training.config.task,
            "train_steps": self.training.steps_done,
            "train_loss_final": self.training.last_loss,
            "val_loss_final": self.training.last_val_loss,
            "checkpoints": self.training.checkpoints_saved,
            "checkpoints_rejected": self.checkpoints.rejected_count,
            "resumes": self.training.resumes,
            "inference_answered": self.inference.answered,
            "assistant": {"model_choice": self.assistant_model, **self.assistant.summary()},
            "sequences": self.sequencer.summary(),
            "commands": dict(self.dispatcher.counters),
            "preemptions": self.training.preemptions,
            "gpu_on_cycles": self.power_manager.gpu_on_cycles,
            "gpu_thermal_trips": world.gpu.thermal_trips,
            "gpu_die_temp_max_c": stats.gpu_die_temp_max_c,
            "frame_slips": self.driver.frame_slips,
            "member_errors": self.driver.error_count,
            "bus_dropped": sum(s["dropped_total"] for s in bus_stats.values()),
            "bus_malformed": sum(s["malformed"] for s in bus_stats.values()),
            "telemetry_messages": self.store.messages_stored,
            "downlink": {key: downlink[key] for key in (
                "passes", "sent_frames", "sent_bytes", "acked_frames", "resent_frames", "queued_frames",
                "evicted_frames", "decimated_frames")},
            "telemetry_sha256": self.store.sha256,
            "weights_sha256": weights,
        }
