"""The facts the assistant may state, read from live telemetry.

Everything comes from the latest messages on the bus: position and eclipse forecast from
``tlm.nav``, the predicted ground track and passes from ``tlm.ephemeris``, battery from
``tlm.eps``, GPU from ``tlm.gpu`` and ``tlm.thermal``, training from ``tlm.training``. Times in
those messages are seconds from their own sample; here they become absolute mission time (ns)
and UTC through the clock the wiring passes in. Nothing here reads the wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

import numpy as np

from flight.assistant.regions import Region, RegionMap
from flight.bus import Message

NS_PER_S = 1_000_000_000
TOPICS = ("tlm.nav", "tlm.ephemeris", "tlm.eps", "tlm.gpu", "tlm.thermal", "tlm.training", "tlm.modes")


@dataclass(frozen=True)
class PassFact:
    station: str
    aos_utc: datetime
    aos_in_s: float
    los_utc: datetime
    max_elevation_deg: float


@dataclass(frozen=True)
class Facts:
    """What is true now, as far as telemetry says; None where telemetry has not said yet."""

    utc: datetime
    region: Region | None = None
    next_region: Region | None = None
    next_region_in_s: float | None = None
    next_region_utc: datetime | None = None
    in_umbra: bool | None = None
    eclipse_start_in_s: float | None = None
    eclipse_start_utc: datetime | None = None
    eclipse_end_in_s: float | None = None
    eclipse_end_utc: datetime | None = None
    battery_soc: float | None = None
    battery_energy_wh: float | None = None
    battery_capacity_wh: float | None = None
    battery_power_w: float | None = None
    gpu_state: str | None = None
    gpu_temp_c: float | None = None
    gpu_power_w: float | None = None
    training_state: str | None = None
    training_steps: int | None = None
    training_loss: float | None = None
    mode: str | None = None
    passes: dict[str, PassFact] = field(default_factory=dict)
    stations: tuple[str, ...] = ()


def _num(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_facts(latest: Mapping[str, Message], now_ns: int, utc_at: Callable[[int], datetime],
               regions: RegionMap) -> Facts:
    """Facts at mission time ``now_ns`` from the latest message of each topic in TOPICS."""
    values: dict[str, Any] = {"utc": utc_at(now_ns)}

    def at(sample_ns: int, in_s: float) -> tuple[float, datetime]:
        t_ns = sample_ns + round(in_s * NS_PER_S)
        return (t_ns - now_ns) / NS_PER_S, utc_at(max(0, t_ns))

    nav = latest.get("tlm.nav")
    if nav is not None:
        lat, lon = _num(nav.body, "lat_deg"), _num(nav.body, "lon_deg")
        if lat is not None and lon is not None:
            values["region"] = regions.region_at(lat, lon)
        values["in_umbra"] = nav.body.get("in_umbra") if isinstance(nav.body.get("in_umbra"), bool) else None
        start, end = _num(nav.body, "umbra_start_in_s"), _num(nav.body, "umbra_end_in_s")
        if start is not None and end is not None:
            values["eclipse_start_in_s"], values["eclipse_start_utc"] = at(nav.t_ns, start)
            values["eclipse_end_in_s"], values["eclipse_end_utc"] = at(nav.t_ns, end)

    ephemeris = latest.get("tlm.ephemeris")
    if ephemeris is not None:
        body = ephemeris.body
        values["stations"] = tuple(s for s in body.get("stations", ()) if isinstance(s, str))
        region = values.get("region")
        change = _next_region(body, ephemeris.t_ns, now_ns, regions, region)
        if change is not None:
            values["next_region"] = change[0]
            values["next_region_in_s"], values["next_region_utc"] = at(now_ns, change[1])
        passes = {}
        for p in body.get("passes", ()):
            if not isinstance(p, dict) or not isinstance(p.get("station"), str):
                continue
            aos_in_s, aos_utc = at(ephemeris.t_ns, float(p["aos_in_s"]))
            _, los_utc = at(ephemeris.t_ns, float(p["los_in_s"]))
            passes[p["station"]] = PassFact(p["station"], aos_utc, aos_in_s, los_utc, float(p["max_elevation_deg"]))
        values["passes"] = passes

    eps = latest.get("tlm.eps")
    if eps is not None:
        soc, capacity = _num(eps.body, "battery_soc"), _num(eps.body, "battery_capacity_wh")
        values["battery_soc"] = soc
        values["battery_capacity_wh"] = capacity
        values["battery_energy_wh"] = soc * capacity if soc is not None and capacity is not None else None
        values["battery_power_w"] = _num(eps.body, "battery_power_w")

    gpu = latest.get("tlm.gpu")
    if gpu is not None:
        values["gpu_state"] = gpu.body.get("state") if isinstance(gpu.body.get("state"), str) else None
        values["gpu_power_w"] = _num(gpu.body, "power_w")
        values["gpu_temp_c"] = _num(gpu.body, "temp_c")
    thermal = latest.get("tlm.thermal")
    if values.get("gpu_temp_c") is None and thermal is not None:
        values["gpu_temp_c"] = _num(thermal.body, "gpu_die_temp_c")  # the die sensor reads while off

    training = latest.get("tlm.training")
    if training is not None:
        values["training_state"] = training.body.get("state") if isinstance(training.body.get("state"), str) else None
        steps = training.body.get("steps")
        values["training_steps"] = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
        values["training_loss"] = _num(training.body, "loss")
    modes = latest.get("tlm.modes")
    if modes is not None and isinstance(modes.body.get("mode"), str):
        values["mode"] = modes.body["mode"]
    return Facts(**values)


def _next_region(body: Mapping[str, Any], sample_ns: int, now_ns: int, regions: RegionMap,
                 current: Region | None) -> tuple[Region, float] | None:
    """The next region the predicted track enters and when (seconds from now)."""
    step_s = body.get("track_step_s")
    lat, lon = body.get("track_lat_deg"), body.get("track_lon_deg")
    if not isinstance(step_s, int) or step_s <= 0 or not isinstance(lat, list) or not isinstance(lon, list) \
            or len(lat) != len(lon) or len(lat) < 2:
        return None
    times_s = (sample_ns - now_ns) / NS_PER_S + step_s * np.arange(len(lat), dtype=np.float64)
    now_index = int(np.searchsorted(times_s, 0.0, side="right")) - 1
    if not 0 <= now_index < len(lat) - 1:
        return None
    lat_a, lon_a = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    while True:
        change = regions.next_change(times_s, lat_a, lon_a, now_index)
        if change is None:
            return None
        if current is None or change.region.id != current.id:
            return change.region, max(0.0, change.time_s)
        # The forecast's sample at now still showed the region we have just left: look past it.
        now_index = int(np.searchsorted(times_s, change.time_s, side="left"))
        if now_index >= len(lat) - 1:
            return None
