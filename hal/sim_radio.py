"""The radio as a sim backend: which ground station is in view, and how fast the downlink runs.

Passes over the scenario's ``[[ground.stations]]`` are predicted in windows (sim.ground_stations.
PassPredictor), so a read is two bisects when no station is in view; in view it adds one look-angle
evaluation from the world's own Earth-fixed track sample (the same propagation as the sunlight),
never a skyfield call.
"""

from __future__ import annotations

from typing import Any

from hal.interfaces import CommandHandler
from sim.ground_stations import (
    GroundStation,
    PassPredictor,
    geodetic_to_ecef_km_scalar,
    stations_from_config,
)
from sim.world import World


class SimRadio:
    """Downlink radio: ``in_contact`` while a station sees the satellite above its mask.

    Telemetry (``tlm.radio``): in_contact, station ("" when none), elevation_deg and range_km of
    the best station in view (None when none), downlink_rate_bps (0 when not in contact),
    los_s (end of the pass in progress, None when none), next_aos_s and next_station (the next
    pass to begin; None / "" when none is predicted within the look-ahead), next_aos_in_s.
    Times ending in ``_s`` without ``_in`` are sim seconds since the scenario epoch.
    """

    name = "radio"

    def __init__(self, world: World, stations: list[GroundStation] | None = None,
                 downlink_rate_bps: float | None = None, *, step_s: float = 10.0,
                 window_s: float = 86400.0, lookahead_s: float = 43200.0) -> None:
        self.world = world
        scenario = world.scenario
        if stations is None:
            stations = stations_from_config(scenario.ground_stations)
        self.downlink_rate_bps = float(scenario.downlink_rate_bps if downlink_rate_bps is None else downlink_rate_bps)
        self.predictor = PassPredictor(world.orbit.propagator, stations, step_s=step_s, window_s=window_s,
                                       lookahead_s=lookahead_s)
        self.contacts = 0  # passes entered (counted on the first read inside each)
        self._active_keys: frozenset[tuple[str, float]] = frozenset()

    def read(self) -> dict[str, Any]:
        t_s = float(self.world.t_s)
        predictor = self.predictor
        active = predictor.passes_at(t_s)
        upcoming = predictor.next_pass(t_s)
        body: dict[str, Any] = {
            "in_contact": False,
            "station": "",
            "elevation_deg": None,
            "range_km": None,
            "downlink_rate_bps": 0.0,
            "los_s": None,
            "next_aos_s": None if upcoming is None else upcoming.aos_s,
            "next_aos_in_s": None if upcoming is None else upcoming.aos_s - t_s,
            "next_station": "" if upcoming is None else upcoming.station,
            "contacts": self.contacts,
        }
        if not active:
            self._active_keys = frozenset()
            return body
        keys = frozenset((p.station, p.aos_s) for p in active)
        self.contacts += len(keys - self._active_keys)
        self._active_keys = keys
        track, i = self.world.sample
        x, y, z = geodetic_to_ecef_km_scalar(float(track.lat_deg[i]), float(track.lon_deg[i]), float(track.alt_km[i]))
        best = None
        for p in active:
            elevation, range_km = predictor.stations[p.station].elevation_range_at(x, y, z)
            if best is None or elevation > best[1]:
                best = (p, elevation, range_km)
        p, elevation, range_km = best
        body.update(in_contact=True, station=p.station, elevation_deg=elevation, range_km=range_km,
                    downlink_rate_bps=self.downlink_rate_bps, los_s=p.los_s, contacts=self.contacts)
        return body

    def command_handlers(self) -> dict[str, CommandHandler]:
        return {}
