"""Power policies compared over a simulated day, against an oracle.

Each policy flies the whole SIL stack (modeled compute) over the same scenario and day:

- ``manager``: the power manager (flight/power_manager.py);
- ``always_on``: full cap until the battery reaches its DoD floor, back on after it recovers;
- ``sunlight_fixed``: a fixed cap in sunlight, off in eclipse.

The horizon is a whole number of orbits (one day rounded up to whole orbits, ~16 for starcloud1),
so that it ends at the orbital phase where it began: ending "at least where it started" is then
something every schedule can meet, which it is not if the day ends in eclipse.

Payload energy is what the GPU drew while doing work (boot and idle excluded). A policy that ends
the day with less battery energy than it started with is charged the deficit: it is subtracted
from its payload energy (``payload_battery_neutral_wh``), as if the payload had run that much
less to leave the battery where it found it.

**The oracle** is the most payload energy any schedule could deliver in the same day with perfect
knowledge: a linear program over 60 s intervals with the same solar input (recorded from the run),
bus load, battery capacity, charge and discharge efficiencies and power limits, that maximises the
GPU energy subject to the battery staying within [DoD floor, full] at every interval boundary and
ending at least where it started. It relaxes the GPU's discrete states (it may draw any power in
[0, max cap], with no idle draw, boot time or minimum cap), so it is an upper bound on every
policy: ``ratio`` = manager's battery-neutral payload energy / oracle.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import lil_matrix

from sim.scenario import Scenario, load_scenario
from sim.sil import SilRun

POLICIES = ("manager", "always_on", "sunlight_fixed")
ORACLE_INTERVAL_S = 60


@dataclass(frozen=True)
class OracleInputs:
    solar_w: np.ndarray  # average array power per interval
    interval_s: float
    bus_w: float
    gpu_max_w: float
    capacity_wh: float
    floor_wh: float
    initial_wh: float
    charge_efficiency: float
    discharge_efficiency: float
    max_charge_w: float
    max_discharge_w: float


def oracle_payload_wh(inputs: OracleInputs) -> float:
    """Maximum GPU energy over the horizon (the LP described in the module docstring)."""
    n = len(inputs.solar_w)
    h = inputs.interval_s / 3600.0
    # Variables per interval t: p (GPU), c (charge), d (discharge), s (shunt), e (energy at end of t).
    p, c, d, s, e = (np.arange(n) + k * n for k in range(5))
    nvar = 5 * n
    cost = np.zeros(nvar)
    cost[p] = -h  # maximise GPU energy
    a_eq = lil_matrix((2 * n, nvar))
    b_eq = np.zeros(2 * n)
    for t in range(n):
        # Power balance on the bus: solar = bus + GPU + charge - discharge + shunt.
        a_eq[t, p[t]] = 1.0
        a_eq[t, c[t]] = 1.0
        a_eq[t, d[t]] = -1.0
        a_eq[t, s[t]] = 1.0
        b_eq[t] = inputs.solar_w[t] - inputs.bus_w
        # Battery energy: e_t = e_{t-1} + (eta_c c - d / eta_d) h.
        row = n + t
        a_eq[row, e[t]] = 1.0
        a_eq[row, c[t]] = -inputs.charge_efficiency * h
        a_eq[row, d[t]] = h / inputs.discharge_efficiency
        if t == 0:
            b_eq[row] = inputs.initial_wh
        else:
            a_eq[row, e[t - 1]] = -1.0
    bounds = ([(0.0, inputs.gpu_max_w)] * n + [(0.0, inputs.max_charge_w)] * n
              + [(0.0, inputs.max_discharge_w)] * n + [(0.0, None)] * n
              + [(inputs.floor_wh, inputs.capacity_wh)] * (n - 1)
              + [(max(inputs.floor_wh, inputs.initial_wh), inputs.capacity_wh)])
    result = linprog(cost, A_eq=a_eq.tocsr(), b_eq=b_eq, bounds=bounds, method="highs")
    if not result.success:
        raise RuntimeError(f"oracle LP failed: {result.message}")
    return float(-result.fun)


def run_policy(scenario: Scenario, policy: str, duration_s: float, seed: int = 0,
               out_dir: Path | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Fly one policy; returns its figures and the array power of every step."""
    with tempfile.TemporaryDirectory() as tmp:
        run = SilRun(scenario, Path(out_dir or tmp) / policy, seed=seed, compute="modeled", policy=policy)
        initial_wh = run.world.battery.energy_wh
        n_steps = int(np.ceil(duration_s / run.step_s))
        solar_w = np.empty(n_steps)
        try:
            for i in range(n_steps):
                run.step()
                solar_w[i] = run.world.solar_power_w
            summary = run.finish()
        finally:
            run.close()
    battery = run.world.battery
    eta_d = battery.params.discharge_efficiency
    deficit_wh = max(0.0, initial_wh - battery.energy_wh)
    payload_wh = summary["energy_wh"]["gpu_busy"]
    return {
        "policy": policy,
        "payload_wh": payload_wh,
        "payload_battery_neutral_wh": payload_wh - deficit_wh * eta_d,
        "battery_start_wh": initial_wh,
        "battery_end_wh": battery.energy_wh,
        "train_steps": summary["train_steps"],
        "dod_violations": summary["dod_violations"],
        "battery_soc_min": summary["battery_soc_min"],
        "gpu_on_cycles": summary["gpu_on_cycles"],
        "gpu_power_cycles": run.world.gpu.on_off_cycles,
        "shunted_wh": summary["energy_wh"]["shunted"],
    }, solar_w


def oracle_inputs(scenario: Scenario, solar_w: np.ndarray, step_s: int) -> OracleInputs:
    per = ORACLE_INTERVAL_S // step_s
    if len(solar_w) % per:
        raise ValueError(f"{len(solar_w)} steps are not whole {ORACLE_INTERVAL_S} s oracle intervals")
    usable = len(solar_w)
    battery = scenario.battery
    return OracleInputs(
        solar_w=solar_w[:usable].reshape(-1, per).mean(axis=1),
        interval_s=float(ORACLE_INTERVAL_S),
        bus_w=scenario.bus_load["power_w"],
        gpu_max_w=scenario.gpu["max_cap_w"],
        capacity_wh=battery["capacity_wh"],
        floor_wh=(1.0 - battery["dod_limit"]) * battery["capacity_wh"],
        initial_wh=battery["initial_soc"] * battery["capacity_wh"],
        charge_efficiency=battery["charge_efficiency"],
        discharge_efficiency=battery["discharge_efficiency"],
        max_charge_w=battery["max_charge_w"],
        max_discharge_w=battery["max_discharge_w"],
    )


def whole_orbits_s(scenario: Scenario, at_least_s: float) -> float:
    """The shortest whole number of orbits lasting at least at_least_s, rounded up to whole oracle
    intervals (which are whole steps)."""
    from sim.world import make_propagator

    period_s = make_propagator(scenario).mean_motion_period_s
    # Whole oracle intervals too, so that the oracle sees every second the policies fly.
    interval_s = ORACLE_INTERVAL_S
    return float(np.ceil(np.ceil(at_least_s / period_s) * period_s / interval_s) * interval_s)


def compare_policies(preset: str | Scenario, duration_s: float = 86400.0, seed: int = 0,
                     policies: tuple[str, ...] = POLICIES) -> dict[str, Any]:
    """Fly each policy for duration_s rounded up to whole orbits; add the oracle."""
    scenario = preset if isinstance(preset, Scenario) else load_scenario(preset)
    duration_s = whole_orbits_s(scenario, duration_s)
    if ORACLE_INTERVAL_S % scenario.simulation["step_s"]:
        raise ValueError(f"the oracle interval {ORACLE_INTERVAL_S} s must be a multiple of the step")
    results: dict[str, Any] = {}
    solar_w = None
    for policy in policies:
        results[policy], solar = run_policy(scenario, policy, duration_s, seed)
        solar_w = solar if solar_w is None else solar_w
        # Sunlight is the world's, not the policy's: every policy must have seen the same array.
        np.testing.assert_allclose(solar, solar_w, rtol=0, atol=1e-9)
    oracle_wh = oracle_payload_wh(oracle_inputs(scenario, solar_w, scenario.simulation["step_s"]))
    for figures in results.values():
        figures["vs_oracle"] = figures["payload_battery_neutral_wh"] / oracle_wh
    return {"scenario": scenario.name, "duration_s": duration_s, "oracle_wh": oracle_wh, "policies": results}


def energy_vs_oracle(preset: str | Scenario, duration_s: float = 86400.0) -> dict[str, Any]:
    """The bench's figure: the power manager's battery-neutral payload energy / the oracle's."""
    comparison = compare_policies(preset, duration_s, policies=("manager",))
    manager = comparison["policies"]["manager"]
    return {"ratio": manager["vs_oracle"], "manager_wh": manager["payload_battery_neutral_wh"],
            "oracle_wh": comparison["oracle_wh"], "dod_violations": manager["dod_violations"]}


def format_comparison(comparison: dict[str, Any]) -> str:
    lines = [f"{comparison['scenario']}: {comparison['duration_s'] / 3600:.1f} h, "
             f"oracle {comparison['oracle_wh']:.0f} Wh of payload energy",
             f"  {'policy':<16}{'payload Wh':>11}{'neutral Wh':>11}{'vs oracle':>10}{'steps':>8}"
             f"{'DoD viol.':>10}{'GPU cycles':>11}{'end Wh':>8}"]
    for name, f in comparison["policies"].items():
        lines.append(f"  {name:<16}{f['payload_wh']:>11.0f}{f['payload_battery_neutral_wh']:>11.0f}"
                     f"{f['vs_oracle']:>10.3f}{f['train_steps']:>8}{f['dod_violations']:>10}"
                     f"{f['gpu_power_cycles']:>11}{f['battery_end_wh']:>8.0f}")
    return "\n".join(lines)
