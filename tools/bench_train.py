"""Training under the scheduler against the same training in a bare PyTorch loop.

SIL side: a real-compute SilRun of the scenario (bus, telemetry store, checkpoints with their
SHA-256 verification, evaluations every ``eval_interval_steps``: everything the onboard job
does). Only ticks that start and end with the GPU busy and the job training count, so GPU boot,
model restore, eclipses and preemptions are left out: the figure is the scheduler's overhead
on a sunlit stretch. Bare side: ``Trainer.step`` in a tight loop with the same config (model,
batch, thread count). The two alternate step by step so that machine noise hits both.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flight.training.trainer import Trainer
from sim.scenario import Scenario, load_scenario
from sim.sil import SilRun, training_job_config

MAX_SIM_S_PER_CHUNK = 4 * 86_400  # give up if the job never trains (e.g. a scenario that never allows it)


@dataclass
class TrainOverhead:
    sil_steps: int
    sil_wall_s: float
    bare_steps: int
    bare_wall_s: float
    sil_checkpoints: int  # taken inside the counted ticks
    sil_ticks: int  # counted ticks: the scheduler's frames the SIL steps took (~ step_time_s / step_s each)
    num_threads: int
    # Of sil_wall_s: the job's evaluations (every eval_interval_steps) and checkpoints (snapshot,
    # hash, write, fsync, verify), which the bare loop does not do.
    sil_evaluate_wall_s: float = 0.0
    sil_checkpoint_wall_s: float = 0.0
    # Per alternation: SIL steps/s over bare steps/s, measured ~0.1 s apart (robust to bursts of
    # load, but blind to rare costs such as checkpoints, which the totals include).
    pair_ratios: list[float] = field(default_factory=list)

    @property
    def sil_steps_per_s(self) -> float:
        return self.sil_steps / self.sil_wall_s

    @property
    def bare_steps_per_s(self) -> float:
        return self.bare_steps / self.bare_wall_s

    @property
    def ratio(self) -> float:
        return self.sil_steps_per_s / self.bare_steps_per_s

    @property
    def median_pair_ratio(self) -> float:
        return statistics.median(self.pair_ratios)


def _training(run: SilRun) -> bool:
    return run.training.state == "training" and run.world.gpu.state == "busy"


class _JobTimers:
    """Wall time the training job spends evaluating and checkpointing, while installed.

    Wraps the job's two checkpoint phases (on the instance) and its trainer class's ``evaluate``
    (a restore after an eclipse makes a new trainer); ``uninstall`` puts them back."""

    def __init__(self, run: SilRun) -> None:
        self.spent = {"evaluate": 0.0, "checkpoint": 0.0}
        self._job = run.training
        self._trainer_class = type(self._job._trainer)
        self._evaluate = self._trainer_class.evaluate
        for name in ("_snapshot", "_persist_pending"):
            setattr(self._job, name, self._timed(getattr(self._job, name), "checkpoint"))
        self._trainer_class.evaluate = self._timed(self._evaluate, "evaluate")

    def _timed(self, function: Callable[..., Any], kind: str) -> Callable[..., Any]:
        spent = self.spent

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[kind] += time.perf_counter() - t0

        return timed

    def uninstall(self) -> None:
        self._trainer_class.evaluate = self._evaluate
        for name in ("_snapshot", "_persist_pending"):
            vars(self._job).pop(name, None)


@dataclass
class _Chunk:
    """What the counted ticks of one ``_sil_chunk`` took."""

    steps: int = 0
    wall_s: float = 0.0
    checkpoints: int = 0
    ticks: int = 0
    evaluate_wall_s: float = 0.0
    checkpoint_wall_s: float = 0.0


def _sil_chunk(run: SilRun, steps_wanted: int, timers: _JobTimers | None = None) -> _Chunk:
    """Step the run until ``steps_wanted`` training steps happened in counted ticks."""
    chunk = _Chunk()
    training = run.training
    spent = timers.spent if timers is not None else {"evaluate": 0.0, "checkpoint": 0.0}
    limit = run.t_s + MAX_SIM_S_PER_CHUNK
    while chunk.steps < steps_wanted:
        if run.t_s > limit:
            raise RuntimeError(f"{run.scenario.name}: the training job did not train within "
                               f"{MAX_SIM_S_PER_CHUNK} simulated seconds")
        busy_before = _training(run)
        steps_before, saved_before = training.steps_done, training.checkpoints_saved
        evaluate_before, checkpoint_before = spent["evaluate"], spent["checkpoint"]
        t0 = time.perf_counter()
        run.step()
        dt = time.perf_counter() - t0
        if busy_before and _training(run):
            chunk.steps += training.steps_done - steps_before
            chunk.checkpoints += training.checkpoints_saved - saved_before
            chunk.wall_s += dt
            chunk.ticks += 1
            chunk.evaluate_wall_s += spent["evaluate"] - evaluate_before
            chunk.checkpoint_wall_s += spent["checkpoint"] - checkpoint_before
    return chunk


def measure_train_overhead(scenario: str | Scenario = "starcloud1", steps: int = 300) -> TrainOverhead:
    """Alternate one SIL training step (the ticks it takes) with one bare step, ``steps`` times.

    Step-by-step alternation: on a shared 2-core machine another process taking a core slows a
    2-thread torch step ~10x for seconds at a time, and only a fine interleave lets such bursts
    hit both sides alike.
    """
    scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    config = training_job_config(scenario, seed=0, compute="real").trainer
    result = TrainOverhead(0, 0.0, 0, 0.0, 0, 0, config.num_threads)
    timers: _JobTimers | None = None
    with tempfile.TemporaryDirectory(prefix="sunlit-bench-") as tmp:
        run = SilRun(scenario, Path(tmp) / "run", seed=0, compute="real")
        try:
            # First steps (lazy allocations) happen outside the window on both sides.
            _sil_chunk(run, 1)
            timers = _JobTimers(run)
            bare = Trainer(config)
            bare.step()
            while result.sil_steps < steps:
                chunk = _sil_chunk(run, 1, timers)
                result.sil_steps += chunk.steps
                result.sil_wall_s += chunk.wall_s
                result.sil_checkpoints += chunk.checkpoints
                result.sil_ticks += chunk.ticks
                result.sil_evaluate_wall_s += chunk.evaluate_wall_s
                result.sil_checkpoint_wall_s += chunk.checkpoint_wall_s
                t0 = time.perf_counter()
                bare.step()
                bare_wall_s = time.perf_counter() - t0
                result.bare_wall_s += bare_wall_s
                result.bare_steps += 1
                result.pair_ratios.append((chunk.steps / chunk.wall_s) * bare_wall_s)
        finally:
            if timers is not None:
                timers.uninstall()
            run.close()
    return result
