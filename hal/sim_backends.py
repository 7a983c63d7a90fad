"""Sim backends: devices that read and actuate the simulated plant (``sim.world.World``).

Sensors add seeded Gaussian noise so that telemetry looks like a sensor's, and so that the run
seed reaches the telemetry even when no model is trained. Each device draws from its own
generator, seeded from (run seed, device index), so adding a channel to one device does not
perturb another's noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.interfaces import CommandHandler, CommandRejected, require_number
from sim.track_buffer import in_saa
from sim.world import World

# 1-sigma sensor noise.
POWER_NOISE_W = 0.5
SOC_NOISE = 0.0001  # a coulomb-counting gauge: little white noise
TEMP_NOISE_C = 0.1


# Normal draws taken from a device's generator at once. Generator.standard_normal(n) yields the
# very values of n single draws, in order, so the telemetry is the same; a single draw costs
# ~0.7 us through numpy's call layer, one from the block ~0.05 us (10 draws a SIL tick).
NOISE_BLOCK = 1024


class _NoisySensor:
    def __init__(self, world: World, seed: int, device_index: int, noise: bool) -> None:
        self.world = world
        self._rng = np.random.default_rng([seed, device_index])
        self._noise = noise
        self._normals = iter(())  # the rest of the current block; only _noisy draws from _rng

    def _noisy(self, value: float, sigma: float) -> float:
        if not self._noise:
            return float(value)
        z = next(self._normals, None)
        if z is None:
            self._normals = iter(self._rng.standard_normal(NOISE_BLOCK).tolist())
            z = next(self._normals)
        return float(value + sigma * z)


class SimEps(_NoisySensor):
    name = "eps"

    def __init__(self, world: World, seed: int, noise: bool = True) -> None:
        super().__init__(world, seed, 1, noise)

    def read(self) -> dict[str, Any]:
        w = self.world
        battery = w.battery
        soc = min(1.0, max(0.0, self._noisy(battery.soc, SOC_NOISE)))
        return {
            "solar_power_w": max(0.0, self._noisy(w.solar_power_w, POWER_NOISE_W)),
            "battery_soc": soc,
            "battery_capacity_wh": battery.capacity_wh,
            "battery_power_w": self._noisy(w.battery_power_w, POWER_NOISE_W),
            "battery_max_charge_w": battery.params.max_charge_w,
            "battery_max_discharge_w": battery.params.max_discharge_w,
            "battery_charge_efficiency": battery.params.charge_efficiency,
            "battery_discharge_efficiency": battery.params.discharge_efficiency,
            "bus_load_w": self._noisy(w.bus_load_w, POWER_NOISE_W),
            "gpu_rail_power_w": max(0.0, self._noisy(w.gpu_power_w, POWER_NOISE_W)),
            "switch_gpu": w.switches["gpu"],
        }

    def command_handlers(self) -> dict[str, CommandHandler]:
        return {"SET_SWITCH": self._set_switch}

    def _set_switch(self, args: dict[str, Any]) -> None:
        switch = args.get("switch")
        if not isinstance(switch, str):
            raise CommandRejected("FORMAT_ERROR", "argument 'switch' must be a string")
        if switch not in self.world.switches:
            raise CommandRejected(
                "VALIDATION_ERROR",
                f"argument 'switch'={switch!r} is not one of {sorted(self.world.switches)}",
            )
        on = args.get("on")
        if not isinstance(on, bool):
            raise CommandRejected("FORMAT_ERROR", "argument 'on' must be a boolean")
        self.world.set_switch(switch, on)


class SimGpu(_NoisySensor):
    name = "gpu"

    def __init__(self, world: World, seed: int, noise: bool = True) -> None:
        super().__init__(world, seed, 2, noise)

    def read(self) -> dict[str, Any]:
        gpu = self.world.gpu
        params = gpu.params
        die_temp_c = self.world.thermal.die_temp_c
        powered = gpu.state != "off"
        return {
            "state": gpu.state,
            "power_w": max(0.0, self._noisy(gpu.power_w, POWER_NOISE_W)) if powered else 0.0,
            "power_cap_w": gpu.power_cap_w,
            "power_limit_min_w": params.min_cap_w,
            "power_limit_max_w": params.max_cap_w,
            # NVML reports thermal limits as margins (degrees of headroom), not absolute values.
            "slowdown_margin_c": params.slowdown_temp_c - die_temp_c,
            "shutdown_margin_c": params.shutdown_temp_c - die_temp_c,
            "temp_c": self._noisy(die_temp_c, TEMP_NOISE_C) if powered else None,
            "on_off_cycles": gpu.on_off_cycles,
            "thermal_trips": gpu.thermal_trips,
        }

    def command_handlers(self) -> dict[str, CommandHandler]:
        return {"SET_POWER_CAP": self._set_power_cap}

    def _set_power_cap(self, args: dict[str, Any]) -> None:
        params = self.world.gpu.params
        cap_w = require_number(args, "cap_w", params.min_cap_w, params.max_cap_w)
        self.world.gpu.set_power_cap_w(cap_w)


class SimThermal(_NoisySensor):
    name = "thermal"

    def __init__(self, world: World, seed: int, noise: bool = True) -> None:
        super().__init__(world, seed, 3, noise)

    def read(self) -> dict[str, Any]:
        thermal = self.world.thermal
        return {
            "gpu_die_temp_c": self._noisy(thermal.die_temp_c, TEMP_NOISE_C),
            "cold_plate_temp_c": self._noisy(thermal.plate_temp_c, TEMP_NOISE_C),
            "radiator_temp_c": self._noisy(thermal.radiator_temp_c, TEMP_NOISE_C),
        }

    def command_handlers(self) -> dict[str, CommandHandler]:
        return {}


class SimNav:
    """Position from the propagated orbit, and the eclipse and SAA schedules predicted from it.

    On orbit this is a GNSS receiver plus an onboard propagator; in SIL it reads the world's own
    precomputed track, which is the same propagation the world uses for sunlight. The SAA passes
    come from the same track (sim.track_buffer's SAA box), extracted once per track window.
    """

    name = "nav"

    def __init__(self, world: World) -> None:
        self.world = world
        # The track window's channels as lists, once per window (the world recomputes it every
        # few hours): a sample is then five list reads, not five numpy scalar reads (~1 us).
        self._lists_for: object = None
        self._lists: tuple[list[float], ...] = ()

    def read(self) -> dict[str, Any]:
        w = self.world
        track, i = w.sample
        if track is not self._lists_for:
            self._lists = (track.lat_deg.tolist(), track.lon_deg.tolist(), track.alt_km.tolist(),
                           track.sunlit_fraction.tolist(), track.beta_deg.tolist())
            self._lists_for = track
        lat, lon, alt, sunlit, beta = self._lists
        umbra = w.next_umbra()
        body: dict[str, Any] = {
            "lat_deg": lat[i],
            "lon_deg": lon[i],
            "alt_km": alt[i],
            "sunlit_fraction": sunlit[i],
            "in_umbra": sunlit[i] == 0.0,
            "beta_deg": beta[i],
            # Seconds from now; None when no umbra is predicted within the look-ahead.
            "umbra_start_in_s": None,
            "umbra_end_in_s": None,
        }
        if umbra is not None:
            start_s, end_s = umbra
            body["umbra_start_in_s"] = max(0.0, start_s - w.t_s)
            body["umbra_end_in_s"] = end_s - w.t_s
        lat_deg, lon_deg = body["lat_deg"], body["lon_deg"]
        body["in_saa"] = in_saa(lat_deg, lon_deg)
        body["saa_start_in_s"] = None
        body["saa_end_in_s"] = None
        saa = w.orbit.next_saa(w.t_s)
        if saa is not None:
            start_s, end_s = saa
            body["saa_start_in_s"] = max(0.0, start_s - w.t_s)
            body["saa_end_in_s"] = end_s - w.t_s
        return body

    def command_handlers(self) -> dict[str, CommandHandler]:
        return {}


class SimAccelerator:
    """The GPU as a compute device for payload jobs: busy/idle, and the work it has done.

    Work is counted in reference seconds: seconds of work at full-TDP throughput, as the GPU
    model accrues it at the current cap and temperature.
    """

    def __init__(self, world: World) -> None:
        self.world = world

    def ready(self) -> bool:
        return self.world.gpu.state in ("idle", "busy")

    def set_busy(self, busy: bool) -> None:
        self.world.gpu.set_busy(busy)

    def take_work_ref_s(self) -> float:
        return self.world.gpu.take_work_ref_s()
