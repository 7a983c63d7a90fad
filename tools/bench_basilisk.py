"""Run the Basilisk day (``tools/bench_basilisk_scenario.py``) for a Sunlit scenario.

Basilisk runs in a child process, with whichever interpreter has it: ``bsk==2.12.1`` pins
matplotlib<=3.10.9, sgp4==2.25 and tqdm==4.67.3, which conflict with Sunlit's own pins, so it
usually lives in a virtual environment of its own. The child imports nothing from Sunlit; it is
given the scenario's numbers as JSON and times ExecuteSimulation only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from sim.scenario import Scenario, load_scenario

SCENARIO_SCRIPT = Path(__file__).with_name("bench_basilisk_scenario.py")
PYTHON_ENV = "SUNLIT_BASILISK_PYTHON"
INSTALL_HINT = (f"Basilisk not installed: python3 -m venv .venv-bsk && .venv-bsk/bin/pip install bsk==2.12.1, "
                f"then pass --basilisk-python .venv-bsk/bin/python (or set {PYTHON_ENV})")
SPACECRAFT_MASS_KG = 60.0  # Starcloud-1 class; the orbit does not depend on it


def basilisk_params(scenario: Scenario, duration_s: int) -> dict:
    """The scenario's numbers for the Basilisk model, GPU always on at its maximum cap."""
    orbit, array = scenario.orbit, scenario.solar_array
    if orbit["tle"] is not None:
        raise ValueError("the Basilisk comparison needs an element-set orbit, not a TLE")
    return {
        "epoch_utc": scenario.epoch_utc.isoformat(),
        "altitude_km": orbit["altitude_km"],
        "eccentricity": orbit["eccentricity"],
        "inclination_deg": orbit["inclination_deg"],
        "raan_deg": orbit["raan_deg"],
        "arg_perigee_deg": orbit["arg_perigee_deg"],
        "mean_anomaly_deg": orbit["mean_anomaly_deg"],
        "array_area_m2": array["area_m2"],
        "array_efficiency": array["cell_efficiency"] * array["packing_factor"] * array["pointing_cos"],
        "battery_capacity_wh": scenario.battery["capacity_wh"],
        "initial_soc": scenario.battery["initial_soc"],
        "bus_load_w": scenario.bus_load["power_w"],
        "gpu_power_w": scenario.gpu["max_cap_w"],
        "radiator_area_m2": scenario.thermal["radiator_area_m2"],
        "mass_kg": SPACECRAFT_MASS_KG,
        "step_s": scenario.simulation["step_s"],
        "duration_s": int(duration_s),
    }


def find_basilisk_python(explicit: str | None = None) -> str | None:
    """The interpreter to run Basilisk with: the one given, $SUNLIT_BASILISK_PYTHON, or this one
    if it can import Basilisk; None when there is none."""
    for candidate in (explicit, os.environ.get(PYTHON_ENV)):
        if candidate:
            return candidate
    if importlib.util.find_spec("Basilisk") is not None:
        return sys.executable
    return None


def time_basilisk_day(scenario: str | Scenario = "starcloud1", duration_s: int = 86_400,
                      python: str | None = None, timeout_s: float = 600.0) -> dict:
    """Run the Basilisk day in a child process; returns its JSON (``exec_s`` is the timing).

    Raises RuntimeError with the child's error output if it fails.
    """
    scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
    python = python or find_basilisk_python()
    if python is None:
        raise RuntimeError(INSTALL_HINT)
    params = json.dumps(basilisk_params(scenario, duration_s))
    done = subprocess.run([python, str(SCENARIO_SCRIPT), params], capture_output=True, text=True,
                          timeout=timeout_s, cwd=SCENARIO_SCRIPT.parent)
    if done.returncode != 0:
        raise RuntimeError(f"Basilisk run failed ({python}): {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["python"] = python
    return result
