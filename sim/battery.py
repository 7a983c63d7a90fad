"""Battery on a regulated power bus: an energy store with charge/discharge efficiencies and
power limits, and an exact energy ledger.

Sign convention: net_bus_power_w = generation - loads. A surplus is offered to the battery
(the shunt regulator dumps what it cannot take); a deficit is drawn from it (what it cannot
supply is unserved load: a brown-out).

Efficiencies act at the terminals: charging with P_in stores P_in * eta_c; delivering P_out
drains P_out / eta_d. So over any run

    energy_in - energy_out - losses == (soc_now - soc_0) * capacity

with losses = in * (1 - eta_c) + out * (1 / eta_d - 1), to float round-off.

Pure Python scalars: this runs every simulated second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.validation import check_range

_S_PER_H = 3600.0


@dataclass(frozen=True)
class BatteryParams:
    capacity_wh: float
    initial_soc: float
    charge_efficiency: float  # stored / accepted at the terminals
    discharge_efficiency: float  # delivered at the terminals / drained from storage
    max_charge_w: float  # at the terminals
    max_discharge_w: float  # at the terminals

    def __post_init__(self) -> None:
        checks = (
            ("capacity_wh", self.capacity_wh, 0.0, math.inf, True),
            ("initial_soc", self.initial_soc, 0.0, 1.0, False),
            ("charge_efficiency", self.charge_efficiency, 0.0, 1.0, True),
            ("discharge_efficiency", self.discharge_efficiency, 0.0, 1.0, True),
            ("max_charge_w", self.max_charge_w, 0.0, math.inf, True),
            ("max_discharge_w", self.max_discharge_w, 0.0, math.inf, True),
        )
        for name, value, lo, hi, lo_open in checks:
            check_range(name, value, lo, hi, lo_open)


@dataclass(slots=True)
class BatteryStep:
    """Average powers over one step, all >= 0."""

    charge_w: float  # accepted from the bus at the battery terminals
    discharge_w: float  # delivered to the bus
    loss_w: float  # conversion losses inside the battery (heat)
    shunted_w: float  # surplus the battery could not take, dumped by the shunt regulator
    unserved_w: float  # load the battery could not supply: brown-out


class Battery:
    __slots__ = ("params", "_capacity_wh", "_energy_wh", "_energy_0_wh", "_eta_c", "_eta_d",
                 "_max_charge_w", "_max_discharge_w", "energy_in_wh", "energy_out_wh",
                 "losses_wh", "shunted_wh", "unserved_wh")

    def __init__(self, params: BatteryParams) -> None:
        self.params = params
        self._capacity_wh = float(params.capacity_wh)
        self._energy_wh = float(params.initial_soc) * self._capacity_wh
        self._energy_0_wh = self._energy_wh
        self._eta_c = float(params.charge_efficiency)
        self._eta_d = float(params.discharge_efficiency)
        self._max_charge_w = float(params.max_charge_w)
        self._max_discharge_w = float(params.max_discharge_w)
        # Cumulative ledger since construction.
        self.energy_in_wh = 0.0  # accepted at the terminals
        self.energy_out_wh = 0.0  # delivered to the bus
        self.losses_wh = 0.0
        self.shunted_wh = 0.0
        self.unserved_wh = 0.0

    @property
    def soc(self) -> float:
        return self._energy_wh / self._capacity_wh

    @property
    def energy_wh(self) -> float:
        return self._energy_wh

    @property
    def capacity_wh(self) -> float:
        return self._capacity_wh

    @property
    def initial_energy_wh(self) -> float:
        return self._energy_0_wh

    def step(self, net_bus_power_w: float, dt_s: float) -> BatteryStep:
        """Advance dt_s with a constant net bus power; returns the step's average powers.

        Reaching full or empty inside the step is exact: only the energy that fits is moved,
        the rest of the step is shunted (full) or unserved (empty).
        """
        if not dt_s >= 0.0:  # also rejects NaN
            raise ValueError(f"dt_s must be >= 0, got {dt_s!r}")
        if net_bus_power_w != net_bus_power_w:
            raise ValueError("net_bus_power_w is NaN")
        dt_h = dt_s / _S_PER_H
        if dt_h == 0.0:  # dt_s == 0 (or so small that it underflows): nothing moves
            return BatteryStep(0.0, 0.0, 0.0, 0.0, 0.0)
        if net_bus_power_w > 0.0:
            offered_w = net_bus_power_w
            charge_w = offered_w if offered_w < self._max_charge_w else self._max_charge_w
            in_wh = charge_w * dt_h
            stored_wh = in_wh * self._eta_c
            room_wh = self._capacity_wh - self._energy_wh
            if stored_wh >= room_wh:  # full inside this step: take only what fits
                stored_wh = room_wh
                in_wh = room_wh / self._eta_c
                charge_w = in_wh / dt_h
                self._energy_wh = self._capacity_wh
            else:
                self._energy_wh += stored_wh
            loss_wh = in_wh - stored_wh
            shunted_w = offered_w - charge_w
            self.energy_in_wh += in_wh
            self.losses_wh += loss_wh
            self.shunted_wh += shunted_w * dt_h
            return BatteryStep(charge_w, 0.0, loss_wh / dt_h, shunted_w, 0.0)
        if net_bus_power_w < 0.0:
            demand_w = -net_bus_power_w
            discharge_w = demand_w if demand_w < self._max_discharge_w else self._max_discharge_w
            out_wh = discharge_w * dt_h
            drained_wh = out_wh / self._eta_d
            if drained_wh >= self._energy_wh:  # empty inside this step
                drained_wh = self._energy_wh
                out_wh = drained_wh * self._eta_d
                discharge_w = out_wh / dt_h
                self._energy_wh = 0.0
            else:
                self._energy_wh -= drained_wh
            loss_wh = drained_wh - out_wh
            unserved_w = demand_w - discharge_w
            self.energy_out_wh += out_wh
            self.losses_wh += loss_wh
            self.unserved_wh += unserved_w * dt_h
            return BatteryStep(0.0, discharge_w, loss_wh / dt_h, 0.0, unserved_w)
        return BatteryStep(0.0, 0.0, 0.0, 0.0, 0.0)
