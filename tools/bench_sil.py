"""Simulation speed: one day of a scenario with the whole flight stack in the loop, and the same
day with the world models alone.

Only the stepping is timed: constructing the run (scenario parsing, SQLite files, bus settling)
is excluded on both sides, so the two figures differ by exactly what the flight software adds.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sim.scenario import Scenario, load_scenario
from sim.sil import SilRun
from sim.world import World

DAY_S = 86_400


@dataclass
class SilTiming:
    scenario: str
    sim_s: int
    wall_s: float
    steps: int
    telemetry_messages: int | None = None  # full stack only: messages that reached the store
    bus_dropped: int | None = None

    @property
    def us_per_step(self) -> float:
        return self.wall_s / self.steps * 1e6

    @property
    def real_time_factor(self) -> float:
        return self.sim_s / self.wall_s


def time_sil_full(scenario: str | Scenario = "starcloud1", duration_s: int = DAY_S) -> SilTiming:
    """SilRun with modeled compute: base tick 1 Hz, every message over the bus into SQLite."""
    scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    with tempfile.TemporaryDirectory(prefix="sunlit-bench-") as tmp:
        run = SilRun(scenario, Path(tmp) / "run", seed=0, compute="modeled")
        try:
            t0 = time.perf_counter()
            run.run(duration_s)
            wall_s = time.perf_counter() - t0
            summary = run.finish()
        finally:
            run.close()
    return SilTiming(
        scenario=scenario.name, sim_s=summary["sim_seconds"], wall_s=wall_s,
        steps=summary["sim_seconds"] // run.step_s,
        telemetry_messages=summary["telemetry_messages"], bus_dropped=summary["bus_dropped"],
    )


def time_world_physics(scenario: str | Scenario = "starcloud1", duration_s: int = DAY_S,
                       gpu_cap_w: float | None = None) -> SilTiming:
    """World.step alone, GPU rail on and busy at a fixed cap (default: its maximum) so that
    every model (orbit, shadow, arrays, battery both ways, GPU, thermal) is exercised."""
    scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    world = World(scenario)
    world.set_switch("gpu", True)
    world.gpu.set_busy(True)  # kept while booting, applied once booted
    world.gpu.set_power_cap_w(world.gpu.params.max_cap_w if gpu_cap_w is None else gpu_cap_w)
    n_steps = -(-duration_s // world.step_s)
    step = world.step
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    wall_s = time.perf_counter() - t0
    return SilTiming(scenario=scenario.name, sim_s=world.t_s, wall_s=wall_s, steps=n_steps)
