"""Power and performance model of one NVIDIA H100 SXM as a plant: rail, boot, power cap, busy.

Throughput vs power cap (work per second relative to running at TDP):

    throughput_fraction(cap) = ((cap - idle) / (tdp - idle)) ** gamma,  0 < gamma < 1

Only the power above idle does work, and returns diminish (concave): the published rule of
thumb is 10-15 % longer step time at 600 W than at 700 W for transformer training. The step-time
ratio is ((tdp - idle) / (600 - idle)) ** gamma = (620 / 520) ** gamma; gamma = 0.67 gives
1.125 (12.5 %, the middle of the range), and 200 W then yields 33 % of full throughput. The
energy per unit of work, cap / throughput_fraction(cap), is lowest at cap = idle / (1 - gamma)
(242 W), about 15 % below that at 700 W. A default to calibrate on hardware.

Plant behaviour:
- off: draws nothing. set_rail(True) from off starts booting (one off->on cycle).
- booting: draws idle power for boot_time_s, then idle. A busy request made while booting is
  kept and takes effect the moment boot ends (inside the step, to the exact second fraction).
- idle: idle power. busy: compute-bound work that saturates the power cap, so it draws exactly
  the cap (memory-bound inference that stays below the cap is not modelled here).
- Thermal slowdown: at a die temperature above slowdown_temp_c the effective power limit of a
  busy GPU falls linearly from the cap (at slowdown) to min_cap_w (at shutdown); power and
  throughput both follow the effective limit. Linear, so a thermal feedback loop settles instead
  of chattering.
- Thermal shutdown: at or above shutdown_temp_c the GPU drops off for the whole step (draws
  nothing, does no work), the trip is counted, and it stays off until set_rail(True) again.
- Losing power (set_rail(False) or a trip) drops all state: the busy request, boot progress and
  the power cap, which returns to the default (max_cap_w) because NVML power limits do not
  persist across a power cycle. Flight software must re-apply its cap after every boot.
- The die temperature passed to step() is the one at the start of the step (from the thermal
  model); it is held for the step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STATES = ("off", "booting", "idle", "busy")


@dataclass(frozen=True)
class GpuParams:
    idle_power_w: float = 80.0
    tdp_w: float = 700.0
    min_cap_w: float = 200.0
    max_cap_w: float = 700.0
    throughput_exponent: float = 0.67  # gamma, see the module docstring
    boot_time_s: float = 30.0
    slowdown_temp_c: float = 87.0
    shutdown_temp_c: float = 92.0

    def __post_init__(self) -> None:
        for name in ("idle_power_w", "tdp_w", "min_cap_w", "max_cap_w", "throughput_exponent",
                     "boot_time_s", "slowdown_temp_c", "shutdown_temp_c"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not self.idle_power_w > 0.0:
            raise ValueError(f"idle_power_w must be > 0, got {self.idle_power_w!r}")
        if not self.idle_power_w < self.min_cap_w:
            raise ValueError(f"min_cap_w ({self.min_cap_w:g}) must be above idle_power_w "
                             f"({self.idle_power_w:g})")
        if not self.min_cap_w <= self.max_cap_w:
            raise ValueError(f"max_cap_w ({self.max_cap_w:g}) must be >= min_cap_w "
                             f"({self.min_cap_w:g})")
        if not self.max_cap_w <= self.tdp_w:
            raise ValueError(f"max_cap_w ({self.max_cap_w:g}) must be <= tdp_w ({self.tdp_w:g})")
        if not 0.0 < self.throughput_exponent <= 1.0:
            raise ValueError(f"throughput_exponent must be in (0, 1], "
                             f"got {self.throughput_exponent!r}")
        if not self.boot_time_s >= 0.0:
            raise ValueError(f"boot_time_s must be >= 0, got {self.boot_time_s!r}")
        if not self.slowdown_temp_c < self.shutdown_temp_c:
            raise ValueError(f"slowdown_temp_c ({self.slowdown_temp_c:g}) must be below "
                             f"shutdown_temp_c ({self.shutdown_temp_c:g})")


def throughput_fraction(params: GpuParams, cap_w):
    """Work per second at power cap cap_w, relative to TDP. Scalar or array; 0 at or below idle,
    saturating at 1 at and above TDP."""
    span_w = params.tdp_w - params.idle_power_w
    gamma = params.throughput_exponent
    if isinstance(cap_w, (int, float)):
        x = (cap_w - params.idle_power_w) / span_w
        if x <= 0.0:
            return 0.0
        return 1.0 if x >= 1.0 else x ** gamma
    x = np.clip((np.asarray(cap_w, dtype=float) - params.idle_power_w) / span_w, 0.0, 1.0)
    return x ** gamma


def step_time_ratio(params: GpuParams, cap_w: float) -> float:
    """How much longer a fixed piece of work takes at cap_w than at TDP."""
    return 1.0 / throughput_fraction(params, cap_w)


class GpuPlant:
    def __init__(self, params: GpuParams) -> None:
        self.params = params
        self._state = "off"
        self._cap_w = float(params.max_cap_w)
        self._busy_requested = False
        self._boot_left_s = 0.0
        self._power_w = 0.0
        self._work_ref_s = 0.0
        self._throttled = False
        self.thermal_trips = 0
        self.on_off_cycles = 0
        self.busy_energy_j = 0.0  # energy drawn while doing work: the payload's useful energy

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        return self._state

    @property
    def power_cap_w(self) -> float:
        return self._cap_w

    @property
    def power_w(self) -> float:
        """Average electrical power over the last step."""
        return self._power_w

    @property
    def boot_remaining_s(self) -> float:
        return self._boot_left_s if self._state == "booting" else 0.0

    @property
    def busy_requested(self) -> bool:
        return self._busy_requested

    @property
    def thermally_throttled(self) -> bool:
        """The last step ran busy above the slowdown temperature."""
        return self._throttled

    # -- actuators ------------------------------------------------------------------------

    def set_rail(self, on: bool) -> None:
        if on:
            if self._state == "off":
                self.on_off_cycles += 1
                if self.params.boot_time_s > 0.0:
                    self._state = "booting"
                    self._boot_left_s = float(self.params.boot_time_s)
                else:
                    self._state = "idle"
        else:
            self._power_down()

    def set_power_cap_w(self, cap_w: float) -> None:
        lo, hi = self.params.min_cap_w, self.params.max_cap_w
        if not lo <= cap_w <= hi:  # also rejects NaN
            raise ValueError(f"power cap must be between {lo:g} W and {hi:g} W, got {cap_w!r}")
        self._cap_w = float(cap_w)

    def set_busy(self, busy: bool) -> None:
        """Request work. Ignored while off; kept while booting, applied once booted."""
        if self._state == "off":
            return
        self._busy_requested = bool(busy)
        if self._state in ("idle", "busy"):
            self._state = "busy" if busy else "idle"

    def take_work_ref_s(self) -> float:
        """Work done since the last call, in reference seconds (seconds of work at TDP)."""
        work = self._work_ref_s
        self._work_ref_s = 0.0
        return work

    @property
    def work_ref_s(self) -> float:
        return self._work_ref_s

    # -- dynamics -------------------------------------------------------------------------

    def _power_down(self) -> None:
        self._state = "off"
        self._busy_requested = False
        self._boot_left_s = 0.0
        self._cap_w = float(self.params.max_cap_w)  # NVML limits do not survive a power cycle

    def effective_cap_w(self, die_temp_c: float) -> float:
        """Power limit after thermal slowdown (see the module docstring)."""
        p = self.params
        if die_temp_c <= p.slowdown_temp_c:
            return self._cap_w
        x = (die_temp_c - p.slowdown_temp_c) / (p.shutdown_temp_c - p.slowdown_temp_c)
        return self._cap_w - (self._cap_w - p.min_cap_w) * min(x, 1.0)

    def step(self, dt_s: float, die_temp_c: float) -> float:
        """Advance dt_s; returns the average electrical power drawn over the step, in W."""
        if not dt_s >= 0.0:
            raise ValueError(f"dt_s must be >= 0, got {dt_s!r}")
        p = self.params
        self._throttled = False
        if self._state == "off":
            self._power_w = 0.0
            return 0.0
        if die_temp_c >= p.shutdown_temp_c:
            self.thermal_trips += 1
            self._power_down()
            self._power_w = 0.0
            return 0.0
        idle_w = p.idle_power_w
        busy_s = 0.0
        if self._state == "booting":
            if self._boot_left_s > dt_s:
                self._boot_left_s -= dt_s
                self._power_w = idle_w
                return idle_w
            remaining_s = dt_s - self._boot_left_s
            self._boot_left_s = 0.0
            self._state = "busy" if self._busy_requested else "idle"
            if self._state == "busy":
                busy_s = remaining_s
        elif self._state == "busy":
            busy_s = dt_s
        if busy_s == 0.0 or dt_s == 0.0:
            self._power_w = idle_w
            return idle_w
        cap_w = self.effective_cap_w(die_temp_c)
        self._throttled = cap_w < self._cap_w
        self._work_ref_s += throughput_fraction(p, cap_w) * busy_s
        self.busy_energy_j += cap_w * busy_s
        power_w = (idle_w * (dt_s - busy_s) + cap_w * busy_s) / dt_s
        self._power_w = power_w
        return power_w
