"""The simulated plant: orbit, sunlight, arrays, battery, loads, GPU and thermal network, stepped
in integer seconds.

The world knows nothing about the flight software. Its inputs are the actuator settings a HAL
backend writes (load switches, GPU power cap, GPU busy); its outputs are the physical state a HAL
backend reads. Time is an integer number of seconds since the scenario epoch; there is no wall
clock and no randomness here (sensor noise belongs to the sensors, in the HAL backends).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sim.battery import Battery, BatteryParams
from sim.gpu_model import GpuParams, GpuPlant
from sim.orbit import OrbitElements, OrbitPropagator, satrec_from_elements, satrec_from_tle
from sim.scenario import Scenario
from sim.solar_array import SolarArrayParams, array_power_w
from sim.thermal import ThermalNetwork, ThermalParams
from sim.track_buffer import TrackBuffer

LOAD_SWITCHES = ("gpu",)


@dataclass
class EnergyLedger:
    """Energy through the power bus since the start of the run."""

    solar_wh: float = 0.0  # what the arrays could deliver (before any shunting)
    gpu_wh: float = 0.0
    bus_wh: float = 0.0
    shunted_wh: float = 0.0  # surplus the full (or rate-limited) battery could not take
    unserved_wh: float = 0.0  # load the battery could not supply: a brown-out
    brownout_steps: int = 0


def make_propagator(scenario: Scenario) -> OrbitPropagator:
    orbit = scenario.orbit
    if orbit["tle"] is not None:
        satrec = satrec_from_tle(*orbit["tle"])
    else:
        satrec = satrec_from_elements(OrbitElements(
            altitude_km=orbit["altitude_km"],
            inclination_deg=orbit["inclination_deg"],
            raan_deg=orbit["raan_deg"],
            epoch_utc=scenario.epoch_utc,
            eccentricity=orbit["eccentricity"],
            arg_perigee_deg=orbit["arg_perigee_deg"],
            mean_anomaly_deg=orbit["mean_anomaly_deg"],
            bstar_per_earth_radius=orbit["bstar_per_earth_radius"],
        ))
    return OrbitPropagator(satrec, scenario.epoch_utc)


def gpu_params(scenario: Scenario) -> GpuParams:
    values = {k: v for k, v in scenario.gpu.items() if v is not None}
    return GpuParams(**values)


class World:
    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.step_s: int = scenario.simulation["step_s"]
        self.epoch_utc: datetime = scenario.epoch_utc
        self.t_s = 0
        self.orbit = TrackBuffer(make_propagator(scenario), self.step_s)
        self.array = SolarArrayParams(**scenario.solar_array)
        battery = {k: v for k, v in scenario.battery.items() if k != "dod_limit"}
        self.battery = Battery(BatteryParams(**battery))
        self.thermal = ThermalNetwork(ThermalParams(**scenario.thermal))
        self.gpu = GpuPlant(gpu_params(scenario))
        self.bus_load_w: float = scenario.bus_load["power_w"]
        self.plate_heat_w: float = self.bus_load_w * scenario.bus_load["plate_heat_fraction"]
        self.switches: dict[str, bool] = {name: False for name in LOAD_SWITCHES}
        self.ledger = EnergyLedger()
        # Averages over the last step, as a power sensor integrating over its sample period reads.
        self.solar_power_w = 0.0
        self.gpu_power_w = 0.0
        self.battery_power_w = 0.0  # + charging, - discharging, at the battery terminals
        self._index = self.orbit.index(0)
        track = self.orbit.track
        self.solar_power_w = float(array_power_w(self.array, float(track.sunlit_fraction[0]),
                                                 float(track.sun_distance_au[0])))

    # -- actuators (written by HAL backends) -------------------------------------------------

    def set_switch(self, name: str, on: bool) -> None:
        if name not in self.switches:
            raise KeyError(f"no load switch {name!r} (switches: {', '.join(self.switches)})")
        self.switches[name] = bool(on)
        if name == "gpu":
            self.gpu.set_rail(bool(on))

    # -- state (read by HAL backends) --------------------------------------------------------

    @property
    def utc(self) -> datetime:
        return self.epoch_utc + timedelta(seconds=self.t_s)

    @property
    def sample(self):
        """The orbit track and the index of the current time in it."""
        return self.orbit.track, self._index

    @property
    def sunlit_fraction(self) -> float:
        return float(self.orbit.track.sunlit_fraction[self._index])

    def next_umbra(self) -> tuple[float, float] | None:
        return self.orbit.next_umbra(self.t_s)

    # -- dynamics ----------------------------------------------------------------------------

    def step(self) -> None:
        dt_s = self.step_s
        track, i = self.orbit.track, self._index
        # Trapezoid over the step: an eclipse boundary inside the step counts in proportion.
        sunlit = 0.5 * (track.sunlit_fraction[i] + track.sunlit_fraction[i + 1])
        sun_distance_au = float(track.sun_distance_au[i])
        solar_w = float(array_power_w(self.array, sunlit, sun_distance_au))
        gpu_w = self.gpu.step(dt_s, self.thermal.die_temp_c)
        net_w = solar_w - self.bus_load_w - gpu_w
        result = self.battery.step(net_w, dt_s)
        self.thermal.step(dt_s, gpu_w, self.plate_heat_w, float(sunlit),
                          float(track.cos_sun_zenith[i]), float(track.alt_km[i]))

        hours = dt_s / 3600.0
        ledger = self.ledger
        ledger.solar_wh += solar_w * hours
        ledger.gpu_wh += gpu_w * hours
        ledger.bus_wh += self.bus_load_w * hours
        ledger.shunted_wh += result.shunted_w * hours
        if result.unserved_w > 0.0:
            ledger.unserved_wh += result.unserved_w * hours
            ledger.brownout_steps += 1
        self.solar_power_w = solar_w
        self.gpu_power_w = gpu_w
        self.battery_power_w = result.charge_w - result.discharge_w

        self.t_s += dt_s
        self._index = self.orbit.index(self.t_s)
